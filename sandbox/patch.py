"""The patch a workspace holds, as text that `git apply` turns back into exactly the bytes the agent left.

`git diff --binary` writes binary files as base85 "GIT binary patch" hunks, but copies the bytes of text files
as they are, and a text file need not be UTF-8 (a latin-1 source file, a stray byte): decoded as UTF-8 such a
patch would be changed (U+FFFD) and no longer apply. So the diff is read as bytes (through a file, not a
command's decoded output); when it is not valid UTF-8, it is made again with the offending files marked binary
(`-diff` in `$GIT_DIR/info/attributes`, which outranks the repository's own `.gitattributes`, for that one
command) and paths quoted (`core.quotepath`), so every byte is carried in ASCII. The result is always text:
it goes into the run store, `predictions.jsonl` and the grading sandbox unchanged, and applies byte for byte.
"""

from __future__ import annotations

import re
import secrets
import shlex

from sandbox import base
from sandbox.base import Sandbox, SandboxError

DIFF_OPTIONS = "--binary --no-color --no-ext-diff --no-textconv --src-prefix=a/ --dst-prefix=b/"
"""Exactly the patch (binary hunks, no colour, no external diff or text conversion the repository configures,
the prefixes `git apply -p1` expects whatever `diff.noprefix` says)."""


def workspace_patch(sb: Sandbox) -> str:
    """The patch of ``sb``'s workspace against its base commit (new files included), lossless (module doc).
    A patch over `base.MAX_PATCH_BYTES` raises SandboxError: a truncated patch would apply as a different change."""
    data = _diff(sb, [])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    paths = non_utf8_files(data, _changed_paths(sb))
    data = _diff(sb, paths)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SandboxError(f"the patch in {sb.workdir} has bytes that are not UTF-8 outside any file git can mark "
                           f"binary (at byte {e.start}): not stored") from None


def _changed_paths(sb: Sandbox) -> list[bytes]:
    out = "/tmp/.evolve-names-" + secrets.token_hex(6)
    r = sb.exec(f"cd {shlex.quote(sb.workdir)} && git diff --cached --name-only -z --no-renames "
                f"{sb.base_commit or 'HEAD'} > {out}", timeout=120)
    if r.exit_code != 0:
        raise SandboxError(f"git diff failed in {sb.workdir}: {r.output[-500:]}")
    try:
        return [p for p in sb.read_file(out).split(b"\0") if p]
    finally:
        sb.exec(f"rm -f {out}", timeout=60)


def non_utf8_files(patch: bytes, paths: list[bytes]) -> list[bytes]:
    """Of ``paths`` (raw, as `git diff --name-only -z` gives them), those whose section of ``patch`` (raw bytes)
    is not valid UTF-8."""
    bad = []
    for section in re.split(rb"(?m)^(?=diff --git )", patch):
        try:
            section.decode("utf-8")
        except UnicodeDecodeError:
            header = section.split(b"\n", 1)[0]
            bad += [p for p in paths if b"a/" + p in header or b"b/" + p in header]
    return list(dict.fromkeys(bad))


def attribute_line(path: bytes) -> bytes:
    """A `$GIT_DIR/info/attributes` line marking exactly ``path`` binary (`-diff`): glob characters escaped, the
    pattern C-quoted (git unquotes quoted patterns), bytes outside printable ASCII as octal."""
    globbed = re.sub(rb"([*?\[\\])", rb"\\\1", path)
    quoted = bytearray(b'"/')
    for byte in globbed:
        if byte in (0x22, 0x5C):  # " and \
            quoted += b"\\" + bytes([byte])
        elif 0x20 <= byte < 0x7F:
            quoted.append(byte)
        else:
            quoted += b"\\%03o" % byte
    return bytes(quoted) + b'" -diff\n'


def _diff(sb: Sandbox, binary: list[bytes]) -> bytes:
    """Raw `git diff` bytes; with ``binary`` paths, those are diffed as binary and paths are quoted."""
    tag = secrets.token_hex(6)
    out, attrs = f"/tmp/.evolve-diff-{tag}", f"/tmp/.evolve-attrs-{tag}"
    q = shlex.quote(sb.workdir)
    commit = sb.base_commit or "HEAD"
    if not binary:
        diff = f"git -c core.quotepath=off diff --cached {DIFF_OPTIONS} {commit} > {out}"
    else:
        sb.write_file(attrs, b"".join(attribute_line(p) for p in binary))
        # the workspace's own info/attributes is kept aside and put back whatever happens
        diff = (f'f=$(git rev-parse --git-path info/attributes) && mkdir -p "$(dirname "$f")" && '
                f'{{ if [ -e "$f" ]; then cp -p "$f" {attrs}.kept; fi; cat {attrs}.kept {attrs} > "$f" 2>/dev/null '
                f'|| cat {attrs} > "$f"; git -c core.quotepath=on diff --cached {DIFF_OPTIONS} {commit} > {out}; '
                f'rc=$?; if [ -e {attrs}.kept ]; then mv -f {attrs}.kept "$f"; else rm -f "$f"; fi; '
                f'rm -f {attrs}; [ $rc -eq 0 ]; }}')
    r = sb.exec(f"cd {q} && git add -A && {diff} && wc -c < {out}", timeout=120)
    try:
        if r.exit_code != 0:
            raise SandboxError(f"git diff failed in {sb.workdir}: {r.output[-500:]}")
        try:
            size = int(r.output.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise SandboxError(f"git diff in {sb.workdir} gave no size: {r.output[-300:]}") from None
        if size > base.MAX_PATCH_BYTES:
            raise SandboxError(f"the patch in {sb.workdir} is {size} bytes, over the limit of "
                               f"{base.MAX_PATCH_BYTES} bytes: not stored (large generated or binary files added?)")
        return sb.read_file(out, max_bytes=max(size, 1))
    finally:
        sb.exec(f"rm -f {out}", timeout=60)
