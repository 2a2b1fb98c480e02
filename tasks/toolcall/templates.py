"""Templated natural-language requests for each tool, with the call that answers them.

`SINGLE[name](rng)` returns `(query, parameters)`: a request phrased one of several ways, with values
drawn from the pools below, and the exact parameters a correct call uses (optional parameters only when
the request mentions them). `MISSING[name](rng)` returns `(query, question)`: a request that lacks a
required argument, and the question a good assistant asks instead of calling. `CHAT` holds small talk.
"""

from __future__ import annotations

from collections.abc import Callable
from random import Random
from typing import Any

Params = dict[str, Any]

CITIES = ["Paris", "Tokyo", "New York", "London", "Berlin", "Madrid", "Rome", "Toronto", "Sydney", "Cairo",
          "Mumbai", "Seoul", "Lisbon", "Oslo", "Chicago", "Nairobi", "Lima", "Dublin", "Vienna", "Prague",
          "Bangkok", "Istanbul", "Boston", "Denver", "Mexico City", "Buenos Aires", "Cape Town", "Singapore",
          "Amsterdam", "Helsinki"]
COUNTRIES = ["Canada", "Brazil", "Japan", "Germany", "India", "Kenya", "Australia", "France", "Mexico", "Norway",
             "Spain", "Egypt", "Chile", "Vietnam", "Poland"]
CITY_COUNTRY = [("Lima", "Peru"), ("Oslo", "Norway"), ("Lyon", "France"), ("Osaka", "Japan"), ("Munich", "Germany"),
                ("Toronto", "Canada"), ("Porto", "Portugal"), ("Nairobi", "Kenya"), ("Melbourne", "Australia"),
                ("Seville", "Spain"), ("Krakow", "Poland"), ("Austin", "United States")]
FIRST = ["Alice", "Bob", "Carmen", "David", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kofi", "Lena",
         "Marco", "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tara"]
LAST = ["Martin", "Nguyen", "Garcia", "Smith", "Rossi", "Khan", "Okafor", "Tanaka", "Silva", "Berg", "Dubois",
        "Novak", "Ali", "Moreau", "Jensen"]
PLACES = ["Union Station", "City Hall", "Riverside Park", "Harbor Bridge", "Central Library", "Westfield Mall",
          "Grand Hotel", "Science Museum", "Memorial Stadium", "Old Town Square"]
RESTAURANTS = ["Luigi's Trattoria", "Sakura House", "Taco Loco", "Green Leaf Cafe", "Bombay Spice", "Le Petit Bistro",
               "Golden Dragon", "Bangkok Garden", "The Burger Joint", "Casa Lola"]
DISHES = ["Margherita Pizza", "Pad Thai", "Chicken Tikka Masala", "Caesar Salad", "Beef Burrito", "Miso Ramen",
          "Veggie Burger", "Spring Rolls", "Lasagna", "Falafel Wrap", "Sushi Platter", "Fish and Chips"]
NOTES = ["no onions", "extra spicy", "gluten-free", "sauce on the side", "no cheese"]
STREETS = ["12 Baker Street", "221 Oak Avenue", "5 Rue de Rivoli", "88 Market Street", "17 Elm Road",
           "40 King's Road", "9 Harbour Lane", "301 Pine Street"]
POSTCODES = ["10115", "75001", "SW1A 1AA", "94103", "2000", "1010", "D02 X285", "00184"]
MOVIES = ["The Silent Harbor", "Midnight Circuit", "Paper Moons", "The Last Orchard", "Glass Horizon",
          "Neon Tides", "A Winter in Lisbon", "Echoes of Mars"]
SONGS = ["jazz classics", "Taylor Swift", "lo-fi beats", "Beethoven symphonies", "80s rock", "Miles Davis",
         "the Beatles", "classical piano", "reggaeton hits", "Daft Punk"]
TOPICS = ["climate change", "artificial intelligence", "the stock market", "football", "space exploration",
          "elections", "electric cars", "public health"]
WORDS = ["serendipity", "ephemeral", "ubiquitous", "quixotic", "laconic", "petrichor", "mellifluous", "sonder",
         "obfuscate", "halcyon"]
PHRASES = ["Where is the train station?", "Good morning", "Thank you very much", "How much does this cost?",
           "I would like a coffee", "See you tomorrow", "The meeting is cancelled", "Happy birthday"]
ROOMS = ["living room", "kitchen", "bedroom", "office", "bathroom", "hallway", "garage"]
TODOS = ["buy groceries", "renew passport", "call the dentist", "pay the electricity bill", "water the plants",
         "book a car service", "prepare the quarterly report", "return the library books"]
TAGS = ["home", "work", "urgent", "finance", "health", "errands", "family"]
PRODUCTS = [("wireless headphones", "electronics"), ("running shoes", "sports"), ("a coffee grinder", "home"),
            ("a yoga mat", "sports"), ("a fantasy novel", "books"), ("a desk lamp", "home"),
            ("a board game", "toys"), ("a rain jacket", "clothing"), ("a mechanical keyboard", "electronics")]
MAILS = [("Meeting notes", "Here are the notes from today's meeting."),
         ("Invoice overdue", "Just a reminder that the March invoice is still open."),
         ("Lunch on Friday", "Are you free for lunch on Friday?"),
         ("Project update", "The beta is ready for testing."),
         ("Welcome aboard", "Welcome to the team, we are glad to have you."),
         ("Slides for tomorrow", "Please send me your slides by tonight.")]
EVENTS = ["Team sync", "Project kickoff", "Dentist appointment", "Quarterly review", "Lunch with Sam",
          "Design workshop", "Budget planning", "Yoga class"]
LOCATIONS = ["Room 4B", "the main office", "Cafe Central", "the board room", "Zoom"]
SMS = ["Running 10 minutes late", "Call me when you land", "Dinner is at 7", "Happy birthday!",
       "Can you pick up milk?", "The keys are under the mat"]
REMINDERS = ["take my medicine", "call Mom", "submit the report", "pick up the kids", "check the oven",
             "feed the cat", "move the car"]
SEARCHES = ["best hiking trails near Denver", "how to fix a leaking faucet", "history of the Eiffel Tower",
            "symptoms of vitamin D deficiency", "python list comprehension examples", "how to make sourdough bread",
            "who invented the telephone", "tips for a job interview"]
STOCKS = [("AAPL", "NASDAQ"), ("MSFT", "NASDAQ"), ("GOOGL", "NASDAQ"), ("IBM", "NYSE"), ("KO", "NYSE"),
          ("HSBA", "LSE"), ("BP", "LSE"), ("7203", "TSE"), ("NVDA", "NASDAQ"), ("JPM", "NYSE")]
CURRENCIES = ["USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD", "INR"]
LANG_NAMES = ["spanish", "french", "german", "italian", "japanese", "portuguese", "korean"]
UNIT_WORDS = {"km": "kilometers", "miles": "miles", "kg": "kilograms", "lb": "pounds", "liters": "liters",
              "gallons": "gallons", "meters": "meters", "feet": "feet"}
UNIT_PAIRS = [("km", "miles"), ("miles", "km"), ("kg", "lb"), ("lb", "kg"), ("liters", "gallons"),
              ("gallons", "liters"), ("meters", "feet"), ("feet", "meters")]
WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


# --- value helpers -----------------------------------------------------------------------------------

def chance(r: Random, p: float) -> bool:
    return r.random() < p


def date(r: Random) -> str:
    return f"2025-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}"


def later(d: str, r: Random) -> str:
    """A date 1-7 days after `d` (days of month are drawn from 1-28, so months have 28 days here)."""
    y, m, day = (int(x) for x in d.split("-"))
    day += r.randint(1, 7)
    if day > 28:
        day, m = day - 28, m + 1
    if m > 12:
        m, y = 1, y + 1
    return f"{y}-{m:02d}-{day:02d}"


def clock(r: Random) -> str:
    return f"{r.randint(6, 22):02d}:{r.choice([0, 15, 30, 45]):02d}"


def money(r: Random, lo: int = 5, hi: int = 500) -> int | float:
    whole = r.randint(lo, hi)
    return whole if chance(r, 0.5) else round(whole + r.choice([0.5, 0.25, 0.99, 0.75]), 2)


def person(r: Random) -> tuple[str, str]:
    first, last = r.choice(FIRST), r.choice(LAST)
    return f"{first} {last}", f"{first.lower()}.{last.lower()}@example.com"


def people(r: Random, k: int) -> list[tuple[str, str]]:
    """`k` different people."""
    out: list[tuple[str, str]] = []
    while len(out) < k:
        p = person(r)
        if p not in out:
            out.append(p)
    return out


def phone(r: Random) -> str:
    return f"+1-555-{r.randint(100, 999)}-{r.randint(1000, 9999)}"


def and_list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def cap(word: str) -> str:
    return word[:1].upper() + word[1:]


# --- one generator per tool --------------------------------------------------------------------------

Gen = Callable[[Random], tuple[str, Params]]
SINGLE: dict[str, Gen] = {}
MISSING: dict[str, Callable[[Random], tuple[str, str]]] = {}


def single(name: str) -> Callable[[Gen], Gen]:
    def deco(f: Gen) -> Gen:
        SINGLE[name] = f
        return f
    return deco


def missing(name: str) -> Callable[[Callable[[Random], tuple[str, str]]], Callable[[Random], tuple[str, str]]]:
    def deco(f: Callable[[Random], tuple[str, str]]) -> Callable[[Random], tuple[str, str]]:
        MISSING[name] = f
        return f
    return deco


@single("get_weather")
def _weather(r: Random) -> tuple[str, Params]:
    city = r.choice(CITIES)
    p: Params = {"city": city}
    unit = ""
    if chance(r, 0.35):
        p["unit"] = r.choice(["celsius", "fahrenheit"])
        unit = f" in {cap(p['unit'])}"
    if chance(r, 0.35):
        p["days"] = r.randint(2, 7)
        q = r.choice([f"Give me the {p['days']}-day forecast for {city}{unit}.",
                      f"What will the weather be in {city} over the next {p['days']} days{unit}?"])
    else:
        q = r.choice([f"What's the weather like in {city}{unit}?", f"How's the weather in {city} right now{unit}?",
                      f"Can you check the weather in {city}{unit}?", f"Tell me the current weather for {city}{unit}."])
    return q, p


@single("convert_currency")
def _currency(r: Random) -> tuple[str, Params]:
    amount = money(r)
    frm, to = r.sample(CURRENCIES, 2)
    q = r.choice([f"Convert {amount} {frm} to {to}.", f"How much is {amount} {frm} in {to}?",
                  f"What's {amount} {frm} worth in {to}?",
                  f"I need to change {amount} {frm} into {to}, how much is that?"])
    return q, {"amount": amount, "from_currency": frm, "to_currency": to}


@single("search_flights")
def _flights(r: Random) -> tuple[str, Params]:
    o, d = r.sample(CITIES, 2)
    p: Params = {"origin": o, "destination": d, "date": date(r)}
    extra = ""
    if chance(r, 0.4):
        p["passengers"] = r.randint(2, 5)
        extra += r.choice([f" for {p['passengers']} passengers", f" for {p['passengers']} people"])
    if chance(r, 0.3):
        p["cabin"] = r.choice(["economy", "premium_economy", "business", "first"])
        extra += f" in {p['cabin'].replace('_', ' ')} class"
    if chance(r, 0.3):
        p["nonstop"] = chance(r, 0.7)
        extra += ", nonstop only" if p["nonstop"] else ", connections are fine"
    q = r.choice([f"Find flights from {o} to {d} on {p['date']}{extra}.",
                  f"Search for a flight from {o} to {d} on {p['date']}{extra}.",
                  f"I need to fly from {o} to {d} on {p['date']}{extra}."])
    return q, p


@single("book_hotel")
def _hotel(r: Random) -> tuple[str, Params]:
    city, ci = r.choice(CITIES), date(r)
    p: Params = {"city": city, "check_in": ci, "check_out": later(ci, r)}
    extra = ""
    if chance(r, 0.4):
        p["guests"] = r.randint(1, 4)
        extra += f" for {p['guests']} guest{'s' if p['guests'] > 1 else ''}"
    if chance(r, 0.25):
        p["rooms"] = r.randint(2, 3)
        extra += f", {p['rooms']} rooms"
    q = r.choice([f"Book a hotel in {city} from {ci} to {p['check_out']}{extra}.",
                  f"I need a hotel room in {city}, checking in {ci} and checking out {p['check_out']}{extra}.",
                  f"Reserve a hotel in {city} for {ci} through {p['check_out']}{extra}."])
    return q, p


@single("send_email")
def _email(r: Random) -> tuple[str, Params]:
    to = [em for _, em in people(r, r.choice([1, 1, 2]))]
    subject, body = r.choice(MAILS)
    p: Params = {"to": to, "subject": subject, "body": body}
    cc = ""
    if chance(r, 0.25):
        copy = person(r)[1]
        while copy in to:
            copy = person(r)[1]
        p["cc"] = [copy]
        cc = f", and cc {copy}"
    who = and_list(to)
    q = r.choice([f'Send an email to {who} with the subject "{subject}" saying "{body}"{cc}.',
                  f'Email {who}: subject "{subject}", body "{body}"{cc}.',
                  f'Please write to {who} with subject "{subject}" and the message "{body}"{cc}.'])
    return q, p


@single("create_calendar_event")
def _event(r: Random) -> tuple[str, Params]:
    title = r.choice(EVENTS)
    p: Params = {"title": title, "date": date(r), "start_time": clock(r),
                 "duration_minutes": r.choice([15, 30, 45, 60, 90, 120])}
    extra = ""
    if chance(r, 0.5):
        guests = people(r, r.randint(1, 2))
        p["attendees"] = [{"name": nm, "email": em} for nm, em in guests]
        extra += " with " + and_list([f"{nm} ({em})" for nm, em in guests])
    if chance(r, 0.3):
        p["location"] = r.choice(LOCATIONS)
        extra += f" at {p['location']}"
    if chance(r, 0.35):
        m, how = r.choice([5, 10, 15, 30, 60]), r.choice(["email", "popup"])
        p["reminder"] = {"minutes_before": m, "method": how}
        extra += f", remind me by email {m} minutes before" if how == "email" else \
            f", with a popup reminder {m} minutes before"
    q = r.choice([f'Schedule "{title}" on {p["date"]} at {p["start_time"]} for {p["duration_minutes"]} minutes{extra}.',
                  f'Create a calendar event called "{title}" on {p["date"]} starting at {p["start_time"]}, '
                  f'lasting {p["duration_minutes"]} minutes{extra}.',
                  f'Put "{title}" in my calendar for {p["date"]} at {p["start_time"]}, '
                  f'{p["duration_minutes"]} minutes long{extra}.'])
    return q, p


@single("set_timer")
def _timer(r: Random) -> tuple[str, Params]:
    p: Params = {"minutes": r.choice([1, 3, 5, 10, 12, 15, 20, 25, 30, 45, 60, 90])}
    lab = ""
    if chance(r, 0.4):
        p["label"] = r.choice(["pasta", "tea", "laundry", "workout", "pizza", "nap"])
        lab = r.choice([f" labeled {p['label']}", f" and call it {p['label']}"])
    m = p["minutes"]
    q = r.choice([f"Set a timer for {m} minutes{lab}.", f"Start a {m}-minute timer{lab}.",
                  f"Please count down {m} minutes{lab}."])
    return q, p


@single("set_alarm")
def _alarm(r: Random) -> tuple[str, Params]:
    p: Params = {"time": clock(r)}
    extra = ""
    if chance(r, 0.4):
        kind = r.choice(["weekdays", "weekends", "some"])
        if kind == "weekdays":
            p["days"], extra = WEEKDAYS[:5], " on weekdays"
        elif kind == "weekends":
            p["days"], extra = WEEKDAYS[5:], " on weekends"
        else:
            p["days"] = sorted(r.sample(WEEKDAYS, 2), key=WEEKDAYS.index)
            extra = f" every {cap(p['days'][0])} and {cap(p['days'][1])}"
    if chance(r, 0.3):
        p["label"] = r.choice(["gym", "work", "medication", "school run"])
        extra += f" labeled {p['label']}"
    q = r.choice([f"Set an alarm for {p['time']}{extra}.", f"Wake me up at {p['time']}{extra}.",
                  f"Please set an alarm at {p['time']}{extra}."])
    return q, p


@single("translate_text")
def _translate(r: Random) -> tuple[str, Params]:
    text, target = r.choice(PHRASES), r.choice(LANG_NAMES)
    p: Params = {"text": text, "target_language": target}
    if chance(r, 0.3):
        p["source_language"] = "english"
        q = r.choice([f'Translate "{text}" from English into {cap(target)}.',
                      f'Can you translate "{text}" from English to {cap(target)}?'])
    else:
        q = r.choice([f'Translate "{text}" into {cap(target)}.', f'How do you say "{text}" in {cap(target)}?',
                      f'Can you translate "{text}" to {cap(target)}?'])
    return q, p


@single("get_stock_price")
def _stock(r: Random) -> tuple[str, Params]:
    sym, exch = r.choice(STOCKS)
    p: Params = {"symbol": sym}
    ex = ""
    if chance(r, 0.35):
        p["exchange"] = exch
        ex = f" on the {exch}"
    q = r.choice([f"What's the current price of {sym}{ex}?", f"How is {sym} trading today{ex}?",
                  f"Get me the latest stock price for {sym}{ex}.", f"Check the share price of {sym}{ex}."])
    return q, p


@single("search_restaurants")
def _restaurants(r: Random) -> tuple[str, Params]:
    loc = r.choice(CITIES)
    p: Params = {"location": loc}
    kind = "restaurants"
    if chance(r, 0.5):
        p["cuisine"] = r.choice(["italian", "japanese", "mexican", "indian", "thai", "french", "chinese", "vegan"])
        kind = f"{cap(p['cuisine'])} restaurants"
    extra = ""
    if chance(r, 0.3):
        p["price_level"] = r.randint(1, 4)
        extra += f" at price level {p['price_level']}"
    if chance(r, 0.3):
        p["open_now"] = True
        extra += " that are open now"
    q = r.choice([f"Find {kind} in {loc}{extra}.", f"Show me {kind} in {loc}{extra}.",
                  f"Are there any good {kind} in {loc}{extra}?"])
    return q, p


@single("get_directions")
def _directions(r: Random) -> tuple[str, Params]:
    o, d = r.sample(PLACES, 2)
    p: Params = {"origin": o, "destination": d}
    extra = ""
    if chance(r, 0.5):
        p["mode"] = r.choice(["driving", "walking", "transit", "cycling"])
        extra += {"driving": " by car", "walking": " on foot", "transit": " by public transport",
                  "cycling": " by bike"}[p["mode"]]
    if chance(r, 0.3):
        p["avoid"] = sorted(r.sample(["tolls", "highways", "ferries"], r.randint(1, 2)),
                            key=["tolls", "highways", "ferries"].index)
        extra += " avoiding " + and_list(p["avoid"])
    q = r.choice([f"How do I get from {o} to {d}{extra}?", f"Give me directions from {o} to {d}{extra}.",
                  f"Route me from {o} to {d}{extra}."])
    return q, p


@single("create_todo")
def _todo(r: Random) -> tuple[str, Params]:
    title = r.choice(TODOS)
    p: Params = {"title": title}
    extra = ""
    if chance(r, 0.4):
        p["due_date"] = date(r)
        extra += r.choice([f" due {p['due_date']}", f" by {p['due_date']}"])
    if chance(r, 0.35):
        p["priority"] = r.choice(["low", "medium", "high"])
        extra += f" with {p['priority']} priority"
    if chance(r, 0.3):
        p["tags"] = r.sample(TAGS, r.randint(1, 2))
        extra += " tagged " + and_list(p["tags"])
    q = r.choice([f'Add "{title}" to my to-do list{extra}.', f'Put "{title}" on my todo list{extra}.',
                  f"Create a task to {title}{extra}."])
    return q, p


@single("play_music")
def _music(r: Random) -> tuple[str, Params]:
    song = r.choice(SONGS)
    p: Params = {"query": song}
    extra = ""
    if chance(r, 0.3):
        p["shuffle"] = chance(r, 0.7)
        extra += " on shuffle" if p["shuffle"] else " in order, no shuffle"
    if chance(r, 0.3):
        p["volume"] = r.choice([20, 30, 40, 50, 60, 70, 80])
        extra += f" at volume {p['volume']}"
    q = r.choice([f"Play {song}{extra}.", f"Put on some {song}{extra}.", f"I want to listen to {song}{extra}."])
    return q, p


@single("get_news")
def _news(r: Random) -> tuple[str, Params]:
    topic = r.choice(TOPICS)
    p: Params = {"topic": topic}
    where = ""
    if chance(r, 0.35):
        p["country"] = r.choice(COUNTRIES)
        where = f" in {p['country']}"
    if chance(r, 0.35):
        p["limit"] = r.choice([3, 5, 10])
        q = r.choice([f"Show me the top {p['limit']} headlines about {topic}{where}.",
                      f"Give me {p['limit']} news stories about {topic}{where}."])
    else:
        q = r.choice([f"What's the latest news on {topic}{where}?", f"Any news about {topic}{where}?"])
    return q, p


@single("place_order")
def _order(r: Random) -> tuple[str, Params]:
    rest = r.choice(RESTAURANTS)
    items, words = [], []
    for dish in r.sample(DISHES, r.randint(1, 3)):
        item: Params = {"name": dish, "quantity": r.randint(1, 3)}
        word = f"{item['quantity']} {dish}"
        if chance(r, 0.25):
            item["notes"] = r.choice(NOTES)
            word += f" ({item['notes']})"
        items.append(item)
        words.append(word)
    p: Params = {"restaurant": rest, "items": items}
    addr = ""
    if chance(r, 0.4):
        p["delivery_address"] = {"street": r.choice(STREETS), "city": r.choice(CITIES),
                                 "postal_code": r.choice(POSTCODES)}
        a = p["delivery_address"]
        addr = f", delivered to {a['street']}, {a['city']} {a['postal_code']}"
    what = and_list(words)
    q = r.choice([f"Order {what} from {rest}{addr}.", f"I'd like to order {what} from {rest}{addr}.",
                  f"Can you get me {what} from {rest}{addr}?"])
    return q, p


@single("convert_units")
def _units(r: Random) -> tuple[str, Params]:
    fu, tu = r.choice(UNIT_PAIRS)
    value = r.randint(1, 200) if chance(r, 0.6) else round(r.randint(10, 999) / 10, 1)
    a, b = UNIT_WORDS[fu], UNIT_WORDS[tu]
    q = r.choice([f"Convert {value} {a} to {b}.", f"How many {b} is {value} {a}?", f"What is {value} {a} in {b}?"])
    return q, {"value": value, "from_unit": fu, "to_unit": tu}


@single("search_web")
def _web(r: Random) -> tuple[str, Params]:
    what = r.choice(SEARCHES)
    p: Params = {"query": what}
    extra = ""
    if chance(r, 0.3):
        p["num_results"] = r.choice([3, 5, 10])
        extra = f" and show {p['num_results']} results"
    q = r.choice([f"Search the web for {what}{extra}.", f"Look up {what} online{extra}.",
                  f"Do a web search for {what}{extra}."])
    return q, p


@single("set_reminder")
def _reminder(r: Random) -> tuple[str, Params]:
    text, d, t = r.choice(REMINDERS), date(r), clock(r)
    q = r.choice([f"Remind me to {text} on {d} at {t}.", f"Set a reminder on {d} at {t} to {text}.",
                  f"Don't let me forget to {text}: remind me on {d} at {t}."])
    return q, {"text": text, "date": d, "time": t}


@single("define_word")
def _define(r: Random) -> tuple[str, Params]:
    w = r.choice(WORDS)
    p: Params = {"word": w}
    if chance(r, 0.3):
        p["language"] = "english"
        q = r.choice([f"Define the word {w} using the English dictionary.",
                      f"Look up {w} in the English dictionary."])
    else:
        q = r.choice([f'What does "{w}" mean?', f"Define the word {w}.", f"Give me the definition of {w}."])
    return q, p


@single("calculate_loan_payment")
def _loan(r: Random) -> tuple[str, Params]:
    principal = r.choice([5000, 12000, 25000, 150000, 240000, 320000, 450000])
    rate = r.choice([3.5, 4.25, 5, 6.75, 7.9, 4, 2.99])
    years = r.choice([3, 5, 10, 15, 20, 25, 30])
    q = r.choice([f"What's the monthly payment on a {principal} loan at {rate}% over {years} years?",
                  f"Calculate the monthly payment for borrowing {principal} at {rate} percent a year "
                  f"for {years} years.",
                  f"If I borrow {principal} for {years} years at {rate}% interest, what do I pay each month?"])
    return q, {"principal": principal, "annual_rate": rate, "years": years}


@single("send_sms")
def _sms(r: Random) -> tuple[str, Params]:
    num, msg = phone(r), r.choice(SMS)
    q = r.choice([f'Text {num} saying "{msg}".', f'Send an SMS to {num}: "{msg}"',
                  f'Send a message to {num} that says "{msg}".'])
    return q, {"phone_number": num, "message": msg}


@single("get_local_time")
def _time(r: Random) -> tuple[str, Params]:
    city = r.choice(CITIES)
    q = r.choice([f"What time is it in {city}?", f"What's the local time in {city} right now?",
                  f"Tell me the current time in {city}."])
    return q, {"city": city}


@single("control_lights")
def _lights(r: Random) -> tuple[str, Params]:
    room = r.choice(ROOMS)
    if chance(r, 0.35):
        q = r.choice([f"Turn off the {room} lights.", f"Switch off the lights in the {room}.",
                      f"Please turn the {room} lights off."])
        return q, {"room": room, "state": "off"}
    p: Params = {"room": room, "state": "on"}
    extra = ""
    if chance(r, 0.4):
        p["brightness"] = r.choice([10, 25, 40, 50, 75, 100])
        extra += f" at {p['brightness']}% brightness"
    if chance(r, 0.3):
        p["color"] = r.choice(["warm white", "cool white", "red", "blue", "green", "purple"])
        extra += f" in {p['color']}"
    q = r.choice([f"Turn on the {room} lights{extra}.", f"Switch the lights in the {room} on{extra}.",
                  f"Please turn the {room} lights on{extra}."])
    return q, p


@single("set_thermostat")
def _thermostat(r: Random) -> tuple[str, Params]:
    unit = r.choice(["celsius", "fahrenheit", None])
    t: int | float = r.randint(60, 78) if unit == "fahrenheit" else r.choice([18, 19, 20, 21, 22, 23, 20.5, 21.5])
    p: Params = {"temperature": t}
    extra = ""
    if unit:
        p["unit"] = unit
        extra += f" {cap(unit)}"
    if chance(r, 0.35):
        p["mode"] = r.choice(["heat", "cool", "auto"])
        extra += {"heat": " in heating mode", "cool": " in cooling mode", "auto": " in auto mode"}[p["mode"]]
    q = r.choice([f"Set the thermostat to {t} degrees{extra}.", f"Make it {t} degrees in here{extra}.",
                  f"Set the temperature to {t} degrees{extra}."])
    return q, p


@single("create_contact")
def _contact(r: Random) -> tuple[str, Params]:
    name, mail = person(r)
    p: Params = {"name": name}
    extra = ""
    if chance(r, 0.5):
        p["phone"] = phone(r)
        extra += f", phone {p['phone']}"
    if chance(r, 0.5):
        p["email"] = mail
        extra += f", email {mail}"
    if chance(r, 0.35):
        city, country = r.choice(CITY_COUNTRY)
        if chance(r, 0.5):
            p["address"] = {"street": r.choice(STREETS), "city": city, "country": country}
            extra += f", address {p['address']['street']}, {city}, {country}"
        else:
            p["address"] = {"city": city, "country": country}
            extra += f", based in {city}, {country}"
    if chance(r, 0.3):
        p["tags"] = r.sample(TAGS, r.randint(1, 2))
        extra += ", labeled " + and_list(p["tags"])
    q = r.choice([f"Add {name} to my contacts{extra}.", f"Save a new contact: {name}{extra}.",
                  f"Create a contact for {name}{extra}."])
    return q, p


@single("search_products")
def _products(r: Random) -> tuple[str, Params]:
    what, category = r.choice(PRODUCTS)
    p: Params = {"query": what}
    extra = ""
    if chance(r, 0.25):
        p["category"] = category
        extra += f" in the {category} section"
    if chance(r, 0.4):
        p["max_price"] = r.choice([20, 50, 75, 100, 150, 49.99])
        extra += f" under {p['max_price']}"
    if chance(r, 0.25):
        p["in_stock_only"] = True
        extra += ", in stock only"
    if chance(r, 0.3):
        p["sort_by"] = r.choice(["price_asc", "price_desc", "rating", "newest"])
        extra += ", " + {"price_asc": "cheapest first", "price_desc": "most expensive first",
                         "rating": "best rated first", "newest": "newest first"}[p["sort_by"]]
    q = r.choice([f"Search the shop for {what}{extra}.", f"Find {what}{extra}.", f"I'm looking for {what}{extra}."])
    return q, p


def _tracking(r: Random, carrier: str) -> str:
    digits = "0123456789"
    if carrier == "ups":
        return "1Z" + "".join(r.choice(digits + "ABCDEFGHJKLMNPRSTVWXY") for _ in range(16))
    length = {"fedex": 12, "dhl": 10, "usps": 20}[carrier]
    return "".join(r.choice(digits) for _ in range(length))


@single("track_package")
def _track(r: Random) -> tuple[str, Params]:
    carrier = r.choice(["ups", "fedex", "dhl", "usps"])
    tn = _tracking(r, carrier)
    p: Params = {"tracking_number": tn}
    extra = ""
    if chance(r, 0.5):
        p["carrier"] = carrier
        extra = r.choice([f" ({carrier.upper()})", f", it was shipped with {carrier.upper()}"])
    q = r.choice([f"Where is my package {tn}{extra}?", f"Track parcel {tn}{extra}.",
                  f"Can you check the status of shipment {tn}{extra}?"])
    return q, p


@single("get_movie_showtimes")
def _movies(r: Random) -> tuple[str, Params]:
    movie, city = r.choice(MOVIES), r.choice(CITIES)
    p: Params = {"movie": movie, "city": city}
    when = ""
    if chance(r, 0.5):
        p["date"] = date(r)
        when = f" on {p['date']}"
    q = r.choice([f'When is "{movie}" playing in {city}{when}?', f'Show me showtimes for "{movie}" in {city}{when}.',
                  f'Find cinema times for "{movie}" in {city}{when}.'])
    return q, p


@single("calculate_bmi")
def _bmi(r: Random) -> tuple[str, Params]:
    w = r.randint(50, 110) if chance(r, 0.6) else r.randint(50, 110) + 0.5
    h = r.randint(150, 200)
    q = r.choice([f"What's my BMI? I weigh {w} kg and I'm {h} cm tall.",
                  f"Calculate the BMI for someone who is {h} cm and {w} kg.",
                  f"I'm {h} cm tall and weigh {w} kg, what's my body mass index?"])
    return q, {"weight_kg": w, "height_cm": h}


@single("create_invoice")
def _invoice(r: Random) -> tuple[str, Params]:
    name, mail = person(r)
    lines, words = [], []
    for desc in r.sample(["Website design", "Consulting hours", "Logo redesign", "Hosting (12 months)",
                          "Photo shoot", "Translation services", "Server maintenance"], r.randint(1, 3)):
        line: Params = {"description": desc, "quantity": r.randint(1, 10), "unit_price": money(r, 20, 900)}
        lines.append(line)
        words.append(f"{line['quantity']} x {desc} at {line['unit_price']} each")
    p: Params = {"customer": {"name": name, "email": mail}, "line_items": lines}
    extra = ""
    if chance(r, 0.5):
        p["currency"] = r.choice(["USD", "EUR", "GBP", "CHF"])
        extra += f", in {p['currency']}"
    if chance(r, 0.4):
        p["due_in_days"] = r.choice([7, 14, 30, 60])
        extra += f", due in {p['due_in_days']} days"
    items = and_list(words)
    q = r.choice([f"Create an invoice for {name} ({mail}) for {items}{extra}.",
                  f"Bill {name} at {mail} for {items}{extra}.",
                  f"Please invoice {name}, {mail}: {items}{extra}."])
    return q, p


@single("book_table")
def _table(r: Random) -> tuple[str, Params]:
    rest, d, t, n = r.choice(RESTAURANTS), date(r), clock(r), r.randint(2, 8)
    q = r.choice([f"Book a table for {n} at {rest} on {d} at {t}.",
                  f"Reserve a table at {rest} for {n} people on {d} at {t}.",
                  f"Can you get us a table at {rest} on {d} at {t}, party of {n}?"])
    return q, {"restaurant": rest, "date": d, "time": t, "party_size": n}


@single("get_population")
def _population(r: Random) -> tuple[str, Params]:
    country = r.choice(COUNTRIES)
    p: Params = {"country": country}
    if chance(r, 0.4):
        p["year"] = r.choice([1950, 1990, 2000, 2010, 2020])
        q = r.choice([f"What was the population of {country} in {p['year']}?",
                      f"How many people lived in {country} in {p['year']}?"])
    else:
        q = r.choice([f"What's the population of {country}?", f"How many people live in {country}?",
                      f"Give me the population of {country}."])
    return q, p


# --- requests that lack a required argument ----------------------------------------------------------

@missing("get_weather")
def _m_weather(r: Random) -> tuple[str, str]:
    return (r.choice(["What's the weather going to be like?", "Check the weather for me.", "Is it cold outside?"]),
            "Sure, which city should I check the weather for?")


@missing("convert_currency")
def _m_currency(r: Random) -> tuple[str, str]:
    amount, frm = money(r), r.choice(CURRENCIES)
    return f"Convert {amount} {frm} please.", f"Which currency should I convert {amount} {frm} into?"


@missing("search_flights")
def _m_flights(r: Random) -> tuple[str, str]:
    o, d = r.sample(CITIES, 2)
    if chance(r, 0.5):
        return f"Find me a flight to {d}.", "Where will you be flying from, and on what date?"
    return f"I need a flight from {o} to {d}.", "What date do you want to fly?"


@missing("book_hotel")
def _m_hotel(r: Random) -> tuple[str, str]:
    return f"Book me a hotel in {r.choice(CITIES)}.", "What are your check-in and check-out dates?"


@missing("send_email")
def _m_email(r: Random) -> tuple[str, str]:
    return f"Send an email to {person(r)[1]}.", "What should the subject and the message say?"


@missing("set_timer")
def _m_timer(r: Random) -> tuple[str, str]:
    return r.choice(["Set a timer.", "Start a timer please.", "Can you start a countdown?"]), \
        "How many minutes should the timer run?"


@missing("set_alarm")
def _m_alarm(r: Random) -> tuple[str, str]:
    return r.choice(["Set an alarm.", "Wake me up tomorrow.", "I need an alarm."]), \
        "What time should the alarm go off?"


@missing("translate_text")
def _m_translate(r: Random) -> tuple[str, str]:
    return f'Translate "{r.choice(PHRASES)}" for me.', "Which language should I translate it into?"


@missing("get_stock_price")
def _m_stock(r: Random) -> tuple[str, str]:
    return r.choice(["What's the stock price today?", "How are my shares doing?"]), \
        "Which stock symbol should I look up?"


@missing("track_package")
def _m_track(r: Random) -> tuple[str, str]:
    return r.choice(["Where is my package?", "Track my parcel.", "Has my order shipped yet?"]), \
        "What is the tracking number of the package?"


@missing("book_table")
def _m_table(r: Random) -> tuple[str, str]:
    return f"Reserve a table at {r.choice(RESTAURANTS)}.", "For how many people, and on which date and at what time?"


@missing("send_sms")
def _m_sms(r: Random) -> tuple[str, str]:
    if chance(r, 0.5):
        return f"Text {phone(r)}.", "What should the message say?"
    return f'Send a text saying "{r.choice(SMS)}".', "Which phone number should I send it to?"


@missing("calculate_bmi")
def _m_bmi(r: Random) -> tuple[str, str]:
    return f"What's my BMI? I weigh {r.randint(50, 110)} kg.", "How tall are you, in centimeters?"


@missing("calculate_loan_payment")
def _m_loan(r: Random) -> tuple[str, str]:
    return (f"What would the monthly payment be on a {r.choice([25000, 150000, 300000])} loan?",
            "What is the annual interest rate, and over how many years?")


@missing("get_directions")
def _m_directions(r: Random) -> tuple[str, str]:
    return f"How do I get to {r.choice(PLACES)}?", "Where are you starting from?"


@missing("set_thermostat")
def _m_thermostat(r: Random) -> tuple[str, str]:
    return r.choice(["Adjust the thermostat.", "Change the thermostat setting."]), \
        "What temperature should I set it to?"


@missing("get_local_time")
def _m_time(r: Random) -> tuple[str, str]:
    return r.choice(["What time is it over there?", "What's the local time at my destination?"]), \
        "Which city do you mean?"


@missing("get_movie_showtimes")
def _m_movies(r: Random) -> tuple[str, str]:
    return f'When is "{r.choice(MOVIES)}" playing?', "Which city should I look in?"


@missing("set_reminder")
def _m_reminder(r: Random) -> tuple[str, str]:
    return f"Remind me to {r.choice(REMINDERS)}.", "When should I remind you? Please give a date and time."


@missing("convert_units")
def _m_units(r: Random) -> tuple[str, str]:
    fu, _ = r.choice(UNIT_PAIRS)
    return f"Convert {r.randint(1, 200)} {UNIT_WORDS[fu]}.", "Which unit should I convert it to?"


# --- small talk --------------------------------------------------------------------------------------

CHAT: list[tuple[str, str]] = [
    ("Hi there!", "Hello! How can I help you today?"),
    ("Good morning!", "Good morning! What can I do for you?"),
    ("How are you doing?", "I'm doing well, thanks for asking! How can I help?"),
    ("Thanks, that's all.", "You're welcome! Have a great day."),
    ("Thank you so much for your help!", "Happy to help! Let me know if you need anything else."),
    ("What's your name?", "I'm your assistant. I can use tools to help with tasks."),
    ("Tell me a joke.", "Why did the developer go broke? Because he used up all his cache."),
    ("Can you help me?", "Of course! What do you need?"),
    ("Bye!", "Goodbye! Talk to you soon."),
    ("Are you a robot?", "I'm an AI assistant. How can I help you?"),
    ("I'm bored.", "How about a walk, a good book, or a new recipe? I can also help you plan something."),
    ("Nice weather we're having, huh?", "It sounds lovely! Is there anything I can help you with?"),
    ("What's the meaning of life?", "Philosophers still debate it, though many would say connection and purpose."),
    ("You're awesome.", "Thank you, that's kind of you! What else can I do for you?"),
    ("Never mind.", "No problem. Just let me know if you need anything."),
    ("Good night!", "Good night! Sleep well."),
    ("Say something nice.", "You're doing great, and it's a pleasure to help you."),
    ("Sorry, wrong chat.", "No worries! I'm here if you need anything."),
]

PURPOSE: dict[str, str] = {
    "get_weather": "check the weather", "convert_currency": "convert currencies", "search_flights": "search flights",
    "book_hotel": "book hotels", "send_email": "send emails", "create_calendar_event": "create calendar events",
    "set_timer": "set timers", "set_alarm": "set alarms", "translate_text": "translate text",
    "get_stock_price": "look up stock prices", "search_restaurants": "search for restaurants",
    "get_directions": "give directions", "create_todo": "add items to the to-do list", "play_music": "play music",
    "get_news": "fetch the news", "place_order": "order food", "convert_units": "convert units",
    "search_web": "search the web", "set_reminder": "set reminders", "define_word": "look up definitions",
    "calculate_loan_payment": "calculate loan payments", "send_sms": "send text messages",
    "get_local_time": "tell the local time", "control_lights": "control the lights",
    "set_thermostat": "set the thermostat", "create_contact": "save contacts", "search_products": "search the shop",
    "track_package": "track packages", "get_movie_showtimes": "find movie showtimes",
    "calculate_bmi": "calculate BMI", "create_invoice": "create invoices", "book_table": "book restaurant tables",
    "get_population": "look up population figures",
}
"""What each tool does, as a verb phrase ('I can't ___ with the tools I have')."""
