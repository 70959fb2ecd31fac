"""Which messages of an mbox make the series to apply, by b4's rules (what `b4 am` keeps).

`git mailsplit --mboxrd` cuts the mbox into messages (lore's mboxes are mboxrd: one `>` of a
`>From ` body line is escaping) and the email package reads each one. Then, as b4 does:

- a reply (`Re:`, `Aw:`, `Fwd:`, `xx: [`) goes, whatever it carries: the inline diff of a
  review is not a patch of the series;
- a cover letter (`[PATCH 0/N]`) goes (its `base-commit:` is read first), and so does any
  message without a diff;
- patches are grouped by revision (`vN`; one without takes the revision of the cover letter or
  the 1/N it replies to) and only the newest revision, the highest `vN`, is kept (b4 takes the
  one whose first patch was sent last; in a local `git format-patch` mbox the Date: is the
  author date, which an amended v2 keeps from v1, so the number decides here);
- the kept patches go in `[n/N]` order, whatever the file order; a missing `n/N` or two
  different messages at one `n` is an error, not a guess (b4 warns and carries on);
- unnumbered patches (`[PATCH]` only, as `git format-patch -N` writes them) keep the file order;
- `base-commit:` comes from the cover letter of the kept revision, else from its first patch
  (where `git format-patch --base` writes it without a cover letter).

b4's library is not used for this: its `LoreMailbox` refuses a message without a Message-ID
(plain `git format-patch` output has none), needs b4's global configuration read from git, checks
DKIM attestation (DNS) by default, and brings pygit2, dkimpy, patatt and liblore along.
"""

from __future__ import annotations

import email
import email.errors
import email.policy
import logging
import re
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from email.message import Message as EmailMessage
from pathlib import Path

from ..errors import ConfigError, InfraError

log = logging.getLogger(__name__)

# b4's own tests for "has a diff" and "has a diffstat" (b4/__init__.py DIFF_RE, DIFFSTAT_RE)
_DIFF = re.compile(r"^(---.*\n\+\+\+|GIT binary patch|diff --git \w/\S+ \w/\S+)", re.M | re.I)
_DIFFSTAT = re.compile(r"^\s*\d+ file.*\d+ (insertion|deletion)", re.M | re.I)
_BASE_COMMIT = re.compile(r"^base-commit:\s*([0-9a-f]{7,64})\s*$", re.M | re.I)
_REPLY = re.compile(r"^(Re|Aw|Fwd):", re.I)
_REPLY_BRACKET = re.compile(r"^\w{2,3}:\s*\[")  # "Re: [PATCH" in any language
_COUNTER = re.compile(r"^(\d{1,4})/(\d{1,4})$")
_REVISION = re.compile(r"^v(\d+)$", re.I)
_MSGID = re.compile(r"<([^<>\s]+)>")


@dataclass(frozen=True)
class Subject:
    """What b4 reads from a subject line (b4's LoreSubject)."""

    text: str  # unfolded, whitespace collapsed
    reply: bool
    revision: int  # 1 unless a vN says otherwise
    revision_given: bool
    counter: int  # n of [n/N]; 1 for an unnumbered patch
    expected: int  # N of [n/N]
    numbered: bool


@dataclass(frozen=True)
class Message:
    raw: bytes  # as git mailsplit wrote it (postmark included): what `git am` reads
    subject: Subject
    msgid: str  # without <>; "" when it has none
    in_reply_to: str
    body: str  # the text part with the patch (b4's choice of part)
    is_mail: bool  # has mail headers; else a bare diff
    has_diff: bool
    has_diffstat: bool

    @property
    def is_cover(self) -> bool:
        return self.subject.numbered and self.subject.counter == 0 and not self.subject.reply

    def why_not_a_patch(self) -> str:
        """Why b4 would not apply this message ("" when it would)."""
        if self.subject.reply:
            return "a reply"
        if self.is_cover:
            return "the cover letter"
        return "" if self.has_diff else "no diff"


@dataclass(frozen=True)
class Selection:
    """The series an mbox holds: its patches in the order to apply, and where it is based."""

    patches: tuple[Message, ...]
    base_commit: str  # from the `base-commit:` line, lower case; "" when there is none
    revision: int
    dropped: tuple[str, ...]  # "subject: why" of every message left out


def parse_subject(header: str) -> Subject:
    """b4's reading of a subject: reply marker, then each [...] prefix's vN and n/N."""
    text = " ".join(header.split())
    rest = text
    reply = bool(_REPLY.match(rest) or _REPLY_BRACKET.match(rest))
    rest = _REPLY_BRACKET.sub("[", rest)
    revision, revision_given, counter, expected, numbered = 1, False, 1, 1, False
    while rest.startswith("["):
        m = re.match(r"^\[([^]]*)]", rest)
        if not m:
            break
        # "[PATCHv3" is "[PATCH v3"
        for chunk in re.sub(r"(patch)(v\d+)", r"\1 \2", m.group(1), flags=re.I).split():
            chunk = chunk.strip(",;")
            if count := _COUNTER.match(chunk):
                counter, expected, numbered = int(count.group(1)), int(count.group(2)), True
            elif rev := _REVISION.match(chunk):
                revision, revision_given = int(rev.group(1)), True
        rest = rest[m.end() :].lstrip()
    # b4: [PATCH 6/5] makes it a series of 6
    return Subject(text, reply, revision, revision_given, counter, max(counter, expected), numbered)


def _header(msg: EmailMessage, name: str) -> str:
    try:
        value = msg.get(name)
        return " ".join(str(value).split()) if value is not None else ""
    except (ValueError, IndexError, LookupError, email.errors.MessageError):  # a header it cannot parse
        return ""


def _first_msgid(value: str) -> str:
    found = _MSGID.search(value)
    return found.group(1) if found else value.strip()


def _body(msg: EmailMessage) -> str:
    """b4's part choice: the first text/plain (or x-patch) part, unless a later one has the diff."""
    body: str | None = None
    for part in msg.walk():
        ctype = part.get_content_type()
        if "/plain" not in ctype and "/x-patch" not in ctype:
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        charset = part.get_content_charset() or msg.get_content_charset() or "utf-8"
        try:
            text = payload.decode(charset, errors="replace")
        except LookupError:  # a charset Python does not know
            text = payload.decode("utf-8", errors="replace")
        if body is None or _DIFF.search(text):
            body = text
    return body or ""


def parse(raw: bytes) -> Message:
    """One message (or a bare diff: no mail headers) as b4 sees it."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    is_mail = bool(_header(msg, "From") or _header(msg, "Subject"))
    body = _body(msg) if is_mail else raw.decode(errors="replace")
    return Message(
        raw=raw,
        subject=parse_subject(_header(msg, "Subject")),
        msgid=_first_msgid(_header(msg, "Message-ID")),
        in_reply_to=_first_msgid(_header(msg, "In-Reply-To")),
        body=body,
        is_mail=is_mail,
        has_diff=bool(_DIFF.search(body)),
        has_diffstat=bool(_DIFFSTAT.search(body)),
    )


def split(data: bytes) -> list[bytes]:
    """The messages of an mbox (mboxrd unescaped), or the whole of a single message or diff."""
    with tempfile.TemporaryDirectory(prefix="testbed-mailsplit-") as tmp:
        # -b: a file that does not start with a postmark is one message; outside any repository
        proc = subprocess.run(
            ["git", "mailsplit", "--mboxrd", "-b", "-d6", f"-o{tmp}"], input=data, capture_output=True, cwd=tmp
        )
        if proc.returncode != 0:
            raise InfraError(f"git mailsplit failed: {proc.stderr.decode(errors='replace').strip()}")
        return [p.read_bytes() for p in sorted(Path(tmp).iterdir(), key=lambda p: int(p.name))]


def _dedupe(messages: Sequence[Message]) -> list[Message]:
    """b4 keeps the first of messages with one Message-ID (a thread saved from two lists)."""
    seen: set[str] = set()
    out = []
    for m in messages:
        if m.msgid and m.msgid in seen:
            continue
        seen.add(m.msgid)
        out.append(m)
    return out


def _thread_revision(m: Message, by_id: dict[str, Message]) -> Message:
    """b4: a patch without vN takes the revision of the cover letter or the 1/N it replies to."""
    parent = by_id.get(m.in_reply_to) if m.in_reply_to else None
    if m.subject.revision_given or parent is None:
        return m
    cover = parent.has_diffstat and not parent.has_diff
    first = parent.has_diff and parent.subject.counter == 1 and m.subject.counter > 0
    if not (cover or first):
        return m
    return replace(m, subject=replace(m.subject, revision=parent.subject.revision))


def _in_order(group: list[Message], where: str, revision: int) -> tuple[Message, ...]:
    """The patches of one revision in [n/N] order; unnumbered ones in file order."""
    if not any(m.subject.numbered for m in group):
        return tuple(group)
    by_counter: dict[int, Message] = {}
    for m in group:
        other = by_counter.setdefault(m.subject.counter, m)
        if other is not m:
            raise ConfigError(
                f"{where}: two messages are patch {m.subject.counter} of v{revision}: "
                f"{other.subject.text!r} and {m.subject.text!r}; keep the one to apply and delete the other"
            )
    expected = max(m.subject.expected for m in group)
    missing = [f"{n}/{expected}" for n in range(1, expected + 1) if n not in by_counter]
    if missing:
        have = ", ".join(f"{n}/{expected}" for n in sorted(by_counter))
        raise ConfigError(
            f"{where}: v{revision} of the series is incomplete: {', '.join(missing)} missing (it has {have}); "
            f"save the whole thread (e.g. `b4 mbox <message-id>`) and give that mbox, or give the patches "
            f"to apply as a directory of .patch files (applied in name order)"
        )
    return tuple(by_counter[n] for n in sorted(by_counter))


def base_commit(messages: Sequence[Message | None]) -> str:
    """The first `base-commit:` id among `messages` (cover letter first, then first patch)."""
    for m in messages:
        found = _BASE_COMMIT.search(m.body) if m is not None else None
        if found:
            return found.group(1).lower()
    return ""


def select(messages: Sequence[Message], where: str) -> Selection:
    """The newest revision's patches in order, and its base commit (see the module's rules)."""
    unique = _dedupe(messages)
    by_id = {m.msgid: m for m in unique if m.msgid}
    covers: dict[int, Message] = {}
    groups: dict[int, list[Message]] = {}
    dropped = []
    for m in unique:
        why = m.why_not_a_patch()
        if m.is_cover:
            covers.setdefault(m.subject.revision, m)
        if why:
            dropped.append(f"{m.subject.text or '(no subject)'}: {why}")
            continue
        m = _thread_revision(m, by_id)
        groups.setdefault(m.subject.revision, []).append(m)
    if not groups:
        raise ConfigError(f"{where}: no patch in this file (no message with a diff that is not a reply)")
    newest = max(groups)
    dropped += [f"v{r} ({len(g)} patch(es)): superseded by v{newest}" for r, g in groups.items() if r != newest]
    kept = _in_order(groups[newest], where, newest)
    for line in dropped:
        log.debug("%s: left out %s", where, line)
    return Selection(kept, base_commit([covers.get(newest), kept[0]]), newest, tuple(dropped))


def read(data: bytes, where: str) -> Selection:
    """The series in the mbox `data` (`where` names it in errors)."""
    return select([parse(raw) for raw in split(data)], where)
