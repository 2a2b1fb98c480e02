"""The tools of the bundled tool-calling suite, as OpenAI function-style JSON schemas.

Each tool is `{"name", "description", "parameters"}` where `parameters` is a JSON schema object with
typed properties, enums, `required`, nested objects and arrays. `GROUPS` lists tools whose jobs overlap,
so the generator never offers one as a distractor for another (that would make the gold answer ambiguous).
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

DATE = r"^\d{4}-\d{2}-\d{2}$"
TIME = r"^\d{2}:\d{2}$"
CURRENCIES = ["USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD", "INR"]
LANGUAGES = ["english", "spanish", "french", "german", "italian", "japanese", "portuguese", "korean"]
WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
UNITS = ["km", "miles", "kg", "lb", "liters", "gallons", "meters", "feet"]


def s(desc: str, **kw: Any) -> Schema:
    return {"type": "string", "description": desc, **kw}


def i(desc: str, **kw: Any) -> Schema:
    return {"type": "integer", "description": desc, **kw}


def n(desc: str, **kw: Any) -> Schema:
    return {"type": "number", "description": desc, **kw}


def b(desc: str) -> Schema:
    return {"type": "boolean", "description": desc}


def e(desc: str, values: list[str]) -> Schema:
    return {"type": "string", "description": desc, "enum": values}


def a(desc: str, items: Schema, **kw: Any) -> Schema:
    return {"type": "array", "description": desc, "items": items, **kw}


def o(desc: str, props: dict[str, Schema], required: list[str]) -> Schema:
    return {"type": "object", "description": desc, "properties": props, "required": required,
            "additionalProperties": False}


def tool(name: str, description: str, props: dict[str, Schema], required: list[str]) -> Schema:
    return {"name": name, "description": description,
            "parameters": {"type": "object", "properties": props, "required": required,
                           "additionalProperties": False}}


TOOLS: list[Schema] = [
    tool("get_weather", "Current weather and forecast for a city.",
         {"city": s("City name"), "unit": e("Temperature unit", ["celsius", "fahrenheit"]),
          "days": i("Forecast days", minimum=1, maximum=7)}, ["city"]),
    tool("convert_currency", "Convert an amount between currencies.",
         {"amount": n("Amount to convert", minimum=0), "from_currency": e("Source currency", CURRENCIES),
          "to_currency": e("Target currency", CURRENCIES)}, ["amount", "from_currency", "to_currency"]),
    tool("search_flights", "Search flights between two cities.",
         {"origin": s("Departure city"), "destination": s("Arrival city"), "date": s("YYYY-MM-DD", pattern=DATE),
          "passengers": i("Number of passengers", minimum=1, maximum=9),
          "cabin": e("Cabin class", ["economy", "premium_economy", "business", "first"]),
          "nonstop": b("Only nonstop flights")}, ["origin", "destination", "date"]),
    tool("book_hotel", "Book a hotel room.",
         {"city": s("City"), "check_in": s("YYYY-MM-DD", pattern=DATE), "check_out": s("YYYY-MM-DD", pattern=DATE),
          "guests": i("Number of guests", minimum=1), "rooms": i("Number of rooms", minimum=1)},
         ["city", "check_in", "check_out"]),
    tool("send_email", "Send an email.",
         {"to": a("Recipient addresses", s("Email address"), minItems=1), "subject": s("Subject line"),
          "body": s("Message body"), "cc": a("CC addresses", s("Email address"))}, ["to", "subject", "body"]),
    tool("create_calendar_event", "Create a calendar event.",
         {"title": s("Event title"), "date": s("YYYY-MM-DD", pattern=DATE), "start_time": s("HH:MM", pattern=TIME),
          "duration_minutes": i("Length in minutes", minimum=1),
          "attendees": a("People invited", o("Attendee", {"name": s("Full name"), "email": s("Email address")},
                                             ["name", "email"])),
          "location": s("Where it happens"),
          "reminder": o("Reminder before the event", {"minutes_before": i("Minutes before start", minimum=0),
                                                      "method": e("How to remind", ["email", "popup"])},
                        ["minutes_before", "method"])},
         ["title", "date", "start_time", "duration_minutes"]),
    tool("set_timer", "Start a countdown timer.",
         {"minutes": i("Duration in minutes", minimum=1, maximum=1440), "label": s("Timer name")}, ["minutes"]),
    tool("set_alarm", "Set an alarm clock.",
         {"time": s("HH:MM, 24-hour", pattern=TIME), "days": a("Repeat on these days", e("Weekday", WEEKDAYS)),
          "label": s("Alarm name")}, ["time"]),
    tool("translate_text", "Translate text into another language.",
         {"text": s("Text to translate"), "target_language": e("Language to translate into", LANGUAGES),
          "source_language": e("Language of the text", LANGUAGES)}, ["text", "target_language"]),
    tool("get_stock_price", "Latest price of a stock.",
         {"symbol": s("Ticker symbol"), "exchange": e("Exchange", ["NYSE", "NASDAQ", "LSE", "TSE"])}, ["symbol"]),
    tool("search_restaurants", "Find restaurants near a place.",
         {"location": s("City or neighbourhood"),
          "cuisine": e("Cuisine", ["italian", "japanese", "mexican", "indian", "thai", "french", "chinese", "vegan"]),
          "price_level": i("1 (cheap) to 4 (expensive)", minimum=1, maximum=4), "open_now": b("Only open now")},
         ["location"]),
    tool("get_directions", "Route between two places.",
         {"origin": s("Start"), "destination": s("End"),
          "mode": e("Travel mode", ["driving", "walking", "transit", "cycling"]),
          "avoid": a("Things to avoid", e("Feature", ["tolls", "highways", "ferries"]))},
         ["origin", "destination"]),
    tool("create_todo", "Add an item to the to-do list.",
         {"title": s("What to do"), "due_date": s("YYYY-MM-DD", pattern=DATE),
          "priority": e("Priority", ["low", "medium", "high"]), "tags": a("Tags", s("Tag"))}, ["title"]),
    tool("play_music", "Play music.",
         {"query": s("Song, artist, album or genre"), "shuffle": b("Shuffle"),
          "volume": i("Volume 0-100", minimum=0, maximum=100)}, ["query"]),
    tool("get_news", "Latest news headlines.",
         {"topic": s("Topic"), "country": s("Country"), "limit": i("Number of headlines", minimum=1, maximum=20)},
         ["topic"]),
    tool("place_order", "Order food for delivery.",
         {"restaurant": s("Restaurant name"),
          "items": a("Dishes", o("Dish", {"name": s("Dish name"), "quantity": i("How many", minimum=1),
                                          "notes": s("Special requests")}, ["name", "quantity"]), minItems=1),
          "delivery_address": o("Address", {"street": s("Street and number"), "city": s("City"),
                                            "postal_code": s("Postal code")}, ["street", "city", "postal_code"])},
         ["restaurant", "items"]),
    tool("convert_units", "Convert a measurement between units.",
         {"value": n("Value"), "from_unit": e("Unit of the value", UNITS), "to_unit": e("Target unit", UNITS)},
         ["value", "from_unit", "to_unit"]),
    tool("search_web", "Search the web.",
         {"query": s("Search query"), "num_results": i("Number of results", minimum=1, maximum=10)}, ["query"]),
    tool("set_reminder", "Remind the user of something at a given date and time.",
         {"text": s("What to remind"), "date": s("YYYY-MM-DD", pattern=DATE), "time": s("HH:MM", pattern=TIME)},
         ["text", "date", "time"]),
    tool("define_word", "Dictionary definition of a word.",
         {"word": s("The word"), "language": e("Dictionary language", ["english", "spanish", "french", "german"])},
         ["word"]),
    tool("calculate_loan_payment", "Monthly payment of a fixed-rate loan.",
         {"principal": n("Loan amount", minimum=0), "annual_rate": n("Yearly interest rate in percent", minimum=0),
          "years": i("Term in years", minimum=1)}, ["principal", "annual_rate", "years"]),
    tool("send_sms", "Send a text message.",
         {"phone_number": s("Phone number"), "message": s("Text")}, ["phone_number", "message"]),
    tool("get_local_time", "Current local time in a city.", {"city": s("City name")}, ["city"]),
    tool("control_lights", "Switch and dim smart lights.",
         {"room": s("Room"), "state": e("On or off", ["on", "off"]),
          "brightness": i("Percent", minimum=0, maximum=100),
          "color": e("Colour", ["warm white", "cool white", "red", "blue", "green", "purple"])}, ["room", "state"]),
    tool("set_thermostat", "Set the thermostat.",
         {"temperature": n("Target temperature"), "unit": e("Unit", ["celsius", "fahrenheit"]),
          "mode": e("Mode", ["heat", "cool", "auto"])}, ["temperature"]),
    tool("create_contact", "Save a new contact.",
         {"name": s("Full name"), "phone": s("Phone number"), "email": s("Email address"),
          "address": o("Postal address", {"street": s("Street and number"), "city": s("City"),
                                          "country": s("Country")}, ["city", "country"]),
          "tags": a("Labels", s("Label"))}, ["name"]),
    tool("search_products", "Search an online shop.",
         {"query": s("What to look for"), "max_price": n("Highest price", minimum=0),
          "category": e("Category", ["electronics", "books", "clothing", "home", "toys", "sports"]),
          "in_stock_only": b("Only items in stock"),
          "sort_by": e("Order", ["price_asc", "price_desc", "rating", "newest"])}, ["query"]),
    tool("track_package", "Where a parcel is.",
         {"tracking_number": s("Tracking number"), "carrier": e("Carrier", ["ups", "fedex", "dhl", "usps"])},
         ["tracking_number"]),
    tool("get_movie_showtimes", "Cinema showtimes for a film.",
         {"movie": s("Film title"), "city": s("City"), "date": s("YYYY-MM-DD", pattern=DATE)}, ["movie", "city"]),
    tool("calculate_bmi", "Body mass index.",
         {"weight_kg": n("Weight in kg", minimum=0), "height_cm": n("Height in cm", minimum=0)},
         ["weight_kg", "height_cm"]),
    tool("create_invoice", "Create an invoice for a customer.",
         {"customer": o("Who pays", {"name": s("Name"), "email": s("Email address")}, ["name", "email"]),
          "line_items": a("What is billed", o("Line", {"description": s("Item"), "quantity": i("Count", minimum=1),
                                                       "unit_price": n("Price per unit", minimum=0)},
                                              ["description", "quantity", "unit_price"]), minItems=1),
          "currency": e("Currency", CURRENCIES), "due_in_days": i("Payment term in days", minimum=0)},
         ["customer", "line_items"]),
    tool("book_table", "Reserve a restaurant table.",
         {"restaurant": s("Restaurant name"), "date": s("YYYY-MM-DD", pattern=DATE), "time": s("HH:MM", pattern=TIME),
          "party_size": i("Number of people", minimum=1)}, ["restaurant", "date", "time", "party_size"]),
    tool("get_population", "Population of a country.",
         {"country": s("Country"), "year": i("Year", minimum=1900, maximum=2100)}, ["country"]),
]

BY_NAME: dict[str, Schema] = {t["name"]: t for t in TOOLS}

GROUPS: list[set[str]] = [
    {"set_timer", "set_alarm", "set_reminder", "create_todo", "create_calendar_event"},
    {"send_email", "send_sms"},
    {"search_restaurants", "book_table", "place_order"},
    {"convert_currency", "convert_units"},
    {"define_word", "translate_text"},
    {"search_web", "get_news"},
]
"""Tools whose jobs overlap: never offered as distractors for each other."""

GENERAL = {"search_web", "get_news"}
"""Tools that could answer almost any question: never offered when the gold answer is 'no tool fits'."""


def related(name: str) -> set[str]:
    """The tool and every tool whose job overlaps with it."""
    out = {name}
    for g in GROUPS:
        if name in g:
            out |= g
    return out
