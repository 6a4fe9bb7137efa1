from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from captions.events import CaptionEvent, Speaker, Word
from meeting.hub import CaptionHub, ClientQueue
from meeting.protocol import (
    Backlog,
    Caption,
    Hello,
    Person,
    RoomState,
    SidecarStatus,
)
from meeting.store import SqliteTranscriptStore

ALICE = Speaker("alice-1", "Alice")
HELLO = Hello("r", "me", "guest", 4096, 256)


def caption(utterance: int, revision: int, kind: str, speaker: str = "a") -> Caption:
    return Caption(CaptionEvent(Speaker(speaker), utterance, revision, kind, (), 0.0))  # type: ignore[arg-type]


def drain(q: ClientQueue) -> list[Caption]:
    out = []
    while (m := q.take()) is not None:
        assert isinstance(m, Caption)
        out.append(m)
    return out


def fields(m: Caption) -> dict[str, object]:
    e = m.event
    return {
        "speaker": e.speaker.id,
        "utterance": e.utterance,
        "revision": e.revision,
        "kind": e.kind,
    }


def test_partials_coalesce_in_place_and_finals_supersede_them() -> None:
    q = ClientQueue(max_finals=10)
    q.put(caption(0, 1, "partial"))
    q.put(caption(0, 1, "partial", speaker="b"))
    q.put(caption(0, 2, "partial"))
    q.put(caption(0, 3, "partial"))
    assert [(m.event.speaker.id, m.event.revision) for m in drain(q)] == [("a", 3), ("b", 1)]
    q.put(caption(1, 1, "partial"))
    q.put(caption(1, 2, "final"))
    q.put(caption(2, 1, "partial"))
    assert [(m.event.utterance, m.event.kind) for m in drain(q)] == [(1, "final"), (2, "partial")]
    assert len(q) == 0


def test_overflow_of_finals_marks_the_queue() -> None:
    q = ClientQueue(max_finals=3)
    for i in range(3):
        q.put(caption(i, 1, "final"))
    for i in range(50):
        q.put(caption(99, i, "partial"))
    assert not q.overflowed
    q.put(caption(3, 1, "final"))
    assert q.overflowed


@given(st.lists(st.tuples(st.sampled_from("ab"), st.integers(0, 3), st.booleans()), max_size=60))
def test_queue_never_loses_a_final_nor_reorders_finals(
    ops: list[tuple[str, int, bool]],
) -> None:
    q = ClientQueue(max_finals=1000)
    sent = []
    for i, (speaker, utterance, is_final) in enumerate(ops):
        m = caption(utterance, i, "final" if is_final else "partial", speaker)
        sent.append(m)
        q.put(m)
    out = [fields(m) for m in drain(q)]
    sent_fields = [fields(m) for m in sent]
    finals = [m for m in sent_fields if m["kind"] == "final"]
    assert [m for m in out if m["kind"] == "final"] == finals
    assert len(out) <= len(sent)
    # Every delivered partial is the newest of its utterance sent before the next final.
    for m in out:
        if m["kind"] == "partial":
            key = (m["speaker"], m["utterance"])
            later = [s for s in sent_fields if (s["speaker"], s["utterance"]) == key]
            assert m == later[-1] or later[later.index(m) + 1]["kind"] == "final"


def event(utterance: int, kind: str, text: str) -> CaptionEvent:
    words = tuple(Word(t, i, i + 0.5, kind == "final") for i, t in enumerate(text.split()))
    return CaptionEvent(ALICE, utterance, 1, kind, words, 1.0)


async def test_hub_backlog_state_and_fanout(tmp_path: Path) -> None:
    hub = CaptionHub(SqliteTranscriptStore(tmp_path / "t.sqlite"), backlog=2)
    for i, text in enumerate(["one", "two", "three"]):
        assert hub.publish("r", event(i, "final", text), stream="s")
        await hub.persist("r", event(i, "final", text), stream="s", stream_started_at=0.0)
    captioner = hub.attach_captioner("r")
    first = await captioner.next()
    assert isinstance(first, RoomState) and first.enabled and first.captioner
    late = await hub.subscribe("r", HELLO)
    other_room = await hub.subscribe("x", HELLO)
    assert await late.next() == HELLO
    backlog = await late.next()
    assert isinstance(backlog, Backlog)
    assert [c.text for c in backlog.captions] == ["two", "three"]
    state = await late.next()
    assert isinstance(state, RoomState) and state.captioner

    hub.set_captions("r", False, by=Person("h", "H"))
    # Off: a partial still in flight is not shown; the final flushed at the switch is.
    hub.publish("r", event(3, "partial", "fo"), stream="s")
    hub.publish("r", event(3, "final", "four"), stream="s")
    # A resent final is stored once and not broadcast again.
    assert not hub.publish("r", event(2, "final", "three"), stream="s")
    await hub.persist("r", event(2, "final", "three"), stream="s", stream_started_at=0.0)
    state = await late.next()
    assert isinstance(state, RoomState)
    assert not state.enabled and state.changed_by == Person("h", "H")
    four = await late.next()
    assert isinstance(four, Caption) and four.event.text == "four" and four.event.kind == "final"
    assert len(late.queue) == 0
    assert await hub.store.count("r") == 3
    for _ in range(3):
        await other_room.next()
    assert len(other_room.queue) == 0
    hub.unsubscribe(late)
    assert hub.subscribers("r") == 0
    # The captioner is told every change of the state: here, off by the host.
    second = await captioner.next()
    assert isinstance(second, RoomState) and not second.enabled
    assert len(captioner.queue) == 0  # captions never go to the captioner


async def test_the_hub_owns_the_state_and_the_captioner_reports_only_its_own(
    tmp_path: Path,
) -> None:
    hub = CaptionHub(SqliteTranscriptStore(tmp_path / "t.sqlite"), default_language="fr")
    page = await hub.subscribe("r", HELLO)
    for _ in range(3):
        await page.next()
    assert hub.state("r").language == "fr" and not hub.state("r").captioner
    captioner = hub.attach_captioner("r")
    assert (await page.next()) == hub.state("r") == (await captioner.next())
    # An English-only captioner: the room's French is not what captions are made in.
    hub.update_status("r", SidecarStatus(degraded=True, participants=2, languages=("en",)))
    state = await page.next()
    assert isinstance(state, RoomState)
    assert state.language == "en" and state.degraded and state.languages == ("en",)
    assert state.enabled and state.changed_by is None  # a status cannot change these
    hub.update_status("r", SidecarStatus(degraded=True, participants=2, languages=("en", "fr")))
    assert (await page.next()).language == "fr"  # type: ignore[union-attr]
    hana = Person("hana", "Hana")
    hub.set_language("r", "en", by=hana)
    hub.set_captions("r", False, by=hana)
    assert (await captioner.next()) == hub.state("r")  # the newest state, coalesced
    assert hub.state("r").language == "en" and not hub.state("r").enabled
    # The captioner leaves: absent, no longer degraded; state kept while a page is there.
    hub.unsubscribe(captioner)
    hub.unsubscribe(captioner)  # idempotent
    state = hub.state("r")
    assert not state.captioner and not state.degraded and not state.enabled
    hub.unsubscribe(page)
    assert hub.state("r").enabled  # an idle room was forgotten: a fresh one starts on


async def test_a_captioner_that_cannot_caption_is_shown_as_unavailable(tmp_path: Path) -> None:
    """A sidecar whose engine refused it (e.g. a wrong Kyutai API key) says so in its
    status; pages get ``captioner: "unavailable"`` (shown as "Captions unavailable")."""
    from meeting.protocol import (
        SidecarStatus,
        parse_publish,
        parse_server,
        serialize_publish,
        serialize_server,
    )

    hub = CaptionHub(SqliteTranscriptStore(tmp_path / "t.sqlite"))
    captioner = hub.attach_captioner("r")
    wire = serialize_publish(SidecarStatus(unavailable=True, participants=1))
    hub.update_status("r", parse_publish(wire))  # type: ignore[arg-type]
    state = hub.state("r")
    assert state.captioner and state.unavailable
    assert json.loads(serialize_server(state))["captioner"] == "unavailable"
    assert parse_server(serialize_server(state)) == state
    hub.update_status("r", SidecarStatus(participants=1))
    assert json.loads(serialize_server(hub.state("r")))["captioner"] == "connected"
    hub.update_status("r", SidecarStatus(unavailable=True, participants=1))
    hub.unsubscribe(captioner)
    assert json.loads(serialize_server(hub.state("r")))["captioner"] == "absent"
    # An older sidecar's status (no "unavailable" field) still parses.
    old = '{"type": "status", "degraded": false, "participants": 0, "languages": []}'
    assert parse_publish(old) == SidecarStatus()
