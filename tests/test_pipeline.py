"""The map engine (run_map) against a fake service: order, bounds, failures, stop, resume, keys, memory."""

from __future__ import annotations

import threading
import tracemalloc

import pytest

from sail_lite.errors import APIConnectionError, InvalidRequestError, ResponseFailedError
from sail_lite.journal import Journal, JournalMismatchError
from sail_lite.pipeline import Progress, run_map

from ._fake_service import FakeService


def results_of(items, service, **kwargs):
    return list(run_map(items, submit=service.submit, attach=service.attach, **kwargs))


@pytest.fixture
def journal(tmp_path):
    with Journal(tmp_path / "job.db") as j:
        yield j


def test_results_come_in_input_order_whatever_the_completion_order():
    service = FakeService(auto=False)
    out = []
    done = threading.Event()

    def consume():
        out.extend(
            run_map(range(10), submit=service.submit, attach=service.attach, max_in_flight=10)
        )
        done.set()

    thread = threading.Thread(target=consume)
    thread.start()
    while len(service.open) < 10:
        threading.Event().wait(0.001)
    service.complete_all(order=lambda fs: list(reversed(fs)))
    assert done.wait(10)
    thread.join()
    assert [r["item"] for r in out] == list(range(10))


def test_in_flight_is_bounded_and_input_is_read_lazily():
    service = FakeService(auto=False)
    read = []

    def items():
        for i in range(100):
            read.append(i)
            yield i

    results = run_map(
        items(), submit=service.submit, attach=service.attach, max_in_flight=4, max_buffered=4
    )
    assert read == []  # nothing happens before the first next()
    consumed = []
    thread = threading.Thread(target=lambda: consumed.extend(results))
    thread.start()
    while len(consumed) < 100:
        service.complete_all(order=lambda fs: list(reversed(fs)))
        threading.Event().wait(0.001)
        assert len(service.open) <= 4
    thread.join()
    assert service.max_open <= 4
    assert [r["item"] for r in consumed] == list(range(100))


def test_a_failure_is_raised_at_its_place_after_earlier_results_and_the_rest_is_cancelled():
    service = FakeService(auto=False)
    results = run_map(
        [0, 1, "fail", 3, 4], submit=service.submit, attach=service.attach, max_in_flight=5
    )
    got = []
    thread_error = []

    def consume():
        try:
            for r in results:
                got.append(r["item"])
        except ResponseFailedError as exc:
            thread_error.append(exc)

    thread = threading.Thread(target=consume)
    thread.start()
    while len(service.open) < 5:
        threading.Event().wait(0.001)
    for future in list(service.open)[:3]:
        service.complete(future)
    thread.join(10)
    assert got == [0, 1]
    assert isinstance(thread_error[0], ResponseFailedError)
    assert service.cancelled_ids == {"resp_3", "resp_4"}  # the two still in flight


def test_return_exceptions_yields_failures_in_place_and_goes_on():
    service = FakeService()
    out = results_of([0, "fail", "bad", 3], service, return_exceptions=True)
    assert out[0]["item"] == 0 and out[3]["item"] == 3
    assert isinstance(out[1], ResponseFailedError)
    assert isinstance(out[2], InvalidRequestError)  # raised by submit, delivered in order


def test_breaking_early_cancels_what_is_in_flight():
    service = FakeService(auto=False)
    results = run_map(range(6), submit=service.submit, attach=service.attach, max_in_flight=3)
    first = []
    thread = threading.Thread(target=lambda: first.append(next(results)))
    thread.start()
    while len(service.open) < 3:
        threading.Event().wait(0.001)
    service.complete(service.open[0])
    thread.join(10)
    results.close()
    assert first[0]["item"] == 0
    # The freed slot was refilled before the result was yielded; the three in flight are cancelled.
    assert service.cancelled_ids == {"resp_1", "resp_2", "resp_3"}
    assert len(service.submits) == 4 and not service.open


def test_without_a_job_keys_are_left_to_the_client():
    service = FakeService()
    results_of([1, 2], service)
    assert service.submits == [None, None]


def test_job_keys_are_deterministic_per_content_and_occurrence():
    first, second = FakeService(), FakeService()
    results_of(["a", "b", "a", "a"], first, job="exp")
    results_of(["a", "a", "b", "a"], second, job="exp")  # re-ordered
    assert sorted(first.submits) == sorted(second.submits)
    assert len(set(first.submits)) == 4  # the same prompt three times is three samples
    assert first.submits[0] == second.submits[0] and first.submits[1] == second.submits[2]
    for key in first.submits:
        assert len(key) <= 255 and "\n" not in key
        key.encode("latin-1")


def test_keys_stay_valid_for_long_or_unicode_job_names():
    service = FakeService()
    results_of(["x"], service, job="é" * 150 + " / run #1")
    key = service.submits[0]
    assert len(key) <= 255
    key.encode("latin-1")
    assert results_of(["x"], FakeService(), job="another") != service.submits


def test_a_rerun_without_journal_replays_on_the_server_with_the_same_keys():
    service = FakeService()
    first = results_of(["a", "b", "a"], service, job="exp")
    second = results_of(["b", "a", "a"], service, job="exp")
    assert service.total_runs == 3
    assert sorted(map(str, first)) == sorted(map(str, second))


def test_bad_arguments_are_typed_errors():
    service = FakeService()
    with pytest.raises(InvalidRequestError):
        run_map([1], submit=service.submit, max_in_flight=0)
    with pytest.raises(InvalidRequestError):
        run_map([1], submit=service.submit, on_interrupt="ignore")
    with pytest.raises(InvalidRequestError):
        run_map([1], submit=service.submit, job="two\nlines")
    out = results_of([{1, 2}], service, job="exp", return_exceptions=True)  # a set is not JSON
    assert isinstance(out[0], InvalidRequestError)


# --- journal ----------------------------------------------------------------------------------------------------


def test_resume_reads_finished_items_from_the_journal_without_a_request(journal):
    service = FakeService()
    first = results_of(["a", "b", "c"], service, journal=journal, job="exp")
    again = FakeService()
    second = results_of(["a", "b", "c"], again, journal=journal, job="exp")
    assert second == first
    assert again.submits == [] and again.attaches == []


def test_resume_reattaches_in_flight_items_and_resends_unsent_ones(journal, tmp_path):
    service = FakeService(auto=False)
    results = run_map(
        ["a", "b", "c", "d"],
        submit=service.submit,
        attach=service.attach,
        journal=journal,
        job="exp",
        max_in_flight=2,
        on_interrupt="leave",
    )
    got = []
    thread = threading.Thread(target=lambda: got.append(next(results)))
    thread.start()
    while len(service.open) < 2:
        threading.Event().wait(0.001)
    service.complete(service.open[0])  # "a" done; "b" and (refilled) "c" accepted and running
    thread.join(10)
    # The process "dies" here: the generator is never closed, nothing is cancelled.
    with Journal(tmp_path / "job.db") as reopened:
        service.auto = True
        service.submits.clear()
        out = results_of(["a", "b", "c", "d"], service, journal=reopened, job="exp")
    assert [r["item"] for r in out] == ["a", "b", "c", "d"]
    assert service.attaches == ["resp_1", "resp_2"]  # "b" and "c" re-attached by id
    assert len(service.submits) == 1  # "d" sent; "a" from the journal
    assert service.total_runs == 4
    results.close()


def test_an_item_that_may_have_been_sent_is_resent_with_the_same_key(journal):
    service = FakeService()
    run_map(["a"], submit=service.submit, journal=journal, job="exp")  # records the job only
    # Simulate a crash between the pending record and the reply: the server ran it, the journal has no id.
    from sail_lite.journal import JournalEntry, derive_key, request_fingerprint

    key = derive_key("exp", '"a"', 0)
    journal.claim("exp", [JournalEntry(key, request_fingerprint("{}", '"a"'), 0, '"a"')])
    service.submit("a", key)
    out = results_of(["a"], service, journal=journal, job="exp")
    assert service.submits == [key, key] and service.total_runs == 1
    assert out[0]["id"] == "resp_0"


def test_a_changed_parameter_under_the_same_job_is_a_mismatch(journal):
    service = FakeService()
    results_of(["a"], service, journal=journal, job="exp", params={"temperature": 1.0})
    with pytest.raises(JournalMismatchError) as info:
        run_map(
            ["a"], submit=service.submit, journal=journal, job="exp", params={"temperature": 0.5}
        )
    assert "temperature" in str(info.value) and "new job name" in str(info.value)


def test_a_changed_item_under_the_same_identity_is_a_mismatch(journal):
    service = FakeService()
    rows = [{"id": 1, "prompt": "hello"}]
    results_of(rows, service, journal=journal, job="exp", identity=lambda row: row["id"])
    with pytest.raises(JournalMismatchError) as info:
        results_of(
            [{"id": 1, "prompt": "changed"}],
            service,
            journal=journal,
            job="exp",
            identity=lambda row: row["id"],
        )
    assert info.value.key is not None and service.total_runs == 1


def test_a_journaled_failure_is_raised_again_without_a_request_unless_retried(journal):
    service = FakeService()
    out = results_of(["fail", "ok"], service, journal=journal, job="exp", return_exceptions=True)
    assert isinstance(out[0], ResponseFailedError)
    again = FakeService()
    out2 = results_of(["fail", "ok"], again, journal=journal, job="exp", return_exceptions=True)
    assert type(out2[0]) is ResponseFailedError and out2[0].code == "server_error"
    assert out2[0].response_id == out[0].response_id and again.submits == []
    retried = results_of(
        ["fail"], again, journal=journal, job="exp", return_exceptions=True, retry_failed=True
    )
    assert again.submits and again.submits[0].endswith(
        ".a1"
    )  # a new key: the old one would replay the failure
    assert isinstance(retried[0], ResponseFailedError)


def test_a_transient_error_leaves_the_item_resumable(journal):
    service = FakeService()
    out = results_of(["flaky"], service, journal=journal, job="exp", return_exceptions=True)
    assert isinstance(out[0], APIConnectionError)
    row = next(journal.rows("exp"))
    assert row.status == "accepted" and row.response_id == "resp_0"
    # Next run re-attaches (and this time it completes).
    service.items["resp_0"] = "fine now"
    service.results["resp_0"] = {"item": "fine now", "id": "resp_0"}
    assert results_of(["flaky"], service, journal=journal, job="exp") == [
        {"item": "fine now", "id": "resp_0"}
    ]
    assert service.attaches == ["resp_0"] and service.total_runs == 1


def test_a_forgotten_response_id_is_resent_with_its_key(journal):
    service = FakeService(auto=False)
    results = run_map(
        ["a"], submit=service.submit, attach=service.attach, journal=journal, job="exp"
    )
    thread = threading.Thread(target=lambda: next(results, None))
    thread.start()
    while not service.open:
        threading.Event().wait(0.001)
    assert next(journal.rows("exp")).status == "accepted"
    service.forgotten.add("resp_0")
    service.auto = True
    out = results_of(["a"], service, journal=journal, job="exp")
    assert out == [{"item": "a", "id": "resp_0"}]  # the key replays the same response
    assert service.total_runs == 1
    service.complete_all()
    thread.join(10)


def ctrl_c_once_all_in_flight(items, service, journal, **options):
    """Run a journaled map of ``items`` (job "exp") and press Ctrl-C once every one of them is in flight."""

    def interrupt(progress):
        if progress.in_flight == len(items):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        list(
            run_map(
                items,
                submit=service.submit,
                attach=service.attach,
                journal=journal,
                job="exp",
                progress=interrupt,
                progress_interval=0,
                **options,
            )
        )


def test_ctrl_c_leaves_in_flight_requests_resumable_by_default_with_a_journal(journal):
    service = FakeService(auto=False)
    ctrl_c_once_all_in_flight(["a", "b", "c"], service, journal)
    assert service.cancelled_ids == set()
    assert journal.counts("exp")["accepted"] == 3
    again = FakeService()
    again.results, again.items = service.results, service.items
    out = results_of(["a", "b", "c"], again, journal=journal, job="exp")
    assert [r["item"] for r in out] == ["a", "b", "c"] and again.submits == []
    assert again.attaches == ["resp_0", "resp_1", "resp_2"]


def test_ctrl_c_cancels_on_the_server_when_asked_and_a_rerun_sends_new_attempt_keys(journal):
    service = FakeService(auto=False)
    ctrl_c_once_all_in_flight(["a", "b"], service, journal, on_interrupt="cancel")
    assert service.cancelled_ids == {"resp_0", "resp_1"}
    assert journal.counts("exp")["cancelled"] == 2
    service.auto = True
    service.submits.clear()
    out = results_of(["a", "b"], service, journal=journal, job="exp")
    assert [r["item"] for r in out] == ["a", "b"]
    assert all(key.endswith(".a1") for key in service.submits)


def test_progress_reports_counts_rate_and_eta_with_an_injected_clock():
    service = FakeService()
    now = [0.0]

    def clock():
        now[0] += 1.0
        return now[0]

    seen = []
    results_of(range(4), service, progress=seen.append, progress_interval=0, clock=clock)
    last = seen[-1]
    assert isinstance(last, Progress)
    assert (last.done, last.failed, last.in_flight, last.total) == (4, 0, 0, 4)
    assert last.rate > 0 and last.eta == 0


def test_memory_stays_flat_for_a_long_generator():
    def peak(n):
        service = FakeService()
        service.runs = _NullCounter()  # the fake's bookkeeping is not what we measure
        service.submit = _lean_submit
        tracemalloc.start()
        count = 0
        for _ in run_map((i for i in range(n)), submit=service.submit, max_in_flight=16):
            count += 1
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert count == n
        return top

    # Flat means flat: 2,000 more items may not add 40 kB, so anything kept per item (a future, a key,
    # a result: 20 bytes or more) fails. Measured: the same peak to the byte for 500 and 20,000 items.
    small, large = peak(500), peak(2500)
    assert large < small + 40_000, (small, large)


class _NullCounter(dict):
    def __missing__(self, key):
        return 0


def _lean_submit(item, key):
    from concurrent.futures import Future

    future = Future()
    future.set_result(item)
    return future


def test_a_reattached_response_found_cancelled_is_sent_again_under_a_new_attempt_key(journal):
    from sail_lite.errors import ResponseCancelledError

    from ._fake_service import FakeFuture

    service = FakeService()
    list(run_map(["a"], submit=service.submit, journal=journal, job="exp"))  # records the job
    # An earlier run left "b" accepted, then its response was cancelled behind the journal's back.
    from sail_lite.journal import JournalEntry, derive_key, request_fingerprint

    key = derive_key("exp", '"b"', 0)
    journal.claim("exp", [JournalEntry(key, request_fingerprint("{}", '"b"'), 1, '"b"')])
    journal.record_accepted(key, "resp_old")

    def attach(response_id):
        future = FakeFuture(None)
        future.set_exception(ResponseCancelledError("cancelled", response_id=response_id))
        return future

    service.submits.clear()
    out = list(
        run_map(["a", "b"], submit=service.submit, attach=attach, journal=journal, job="exp")
    )
    assert [r["item"] for r in out] == ["a", "b"]
    assert service.submits == [key + ".a1"]
