"""The one mapping from exceptions to answers (error_map), in-process."""

from __future__ import annotations

import inspect

import pytest

from openbayes_serving import error_map, errors
from openbayes_serving.error_map import error_answer


def test_every_error_class_has_a_rule():
    # As httpx pins its exception map: a new exception class must say how it is answered.
    defined = {
        value
        for value in vars(errors).values()
        if inspect.isclass(value)
        and issubclass(value, BaseException)
        and value.__module__ == errors.__name__
    }
    assert defined - set(error_map.RULES) == set()


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (errors.BadRequestError("bad"), 400),
        (errors.UnauthorizedError("key"), 401),
        (errors.NotFoundError("where"), 404),
        (errors.MethodNotAllowedError("how"), 405),
        (errors.NotAcceptableError("which"), 406),
        (errors.RequestTimeoutError("slow"), 408),
        (errors.PayloadTooLargeError("big"), 413),
        (errors.HeadTooLargeError("big head"), 431),
        (errors.QueueTimeoutError("late"), 504),
        (errors.ServingError("teapot", 418, {"k": 1}), 418),
    ],
)
def test_serving_errors_keep_their_status_message_and_payload(exc, status):
    answer = error_answer(exc, "rid", details=False)
    assert answer.status == status
    assert answer.body["error"] == exc.message
    assert answer.send
    assert not answer.fatal


def test_overload_carries_retry_after_and_is_not_logged_as_an_error():
    answer = error_answer(errors.OverloadedError("full", retry_after=3))
    assert (answer.status, dict(answer.headers)) == (503, {b"retry-after": b"3"})
    assert answer.log is None


def test_a_user_serving_error_of_500_is_logged():
    assert error_answer(errors.ServingError("broken", 500)).log == "error"


def test_a_bug_is_hidden_in_production_and_shown_locally():
    try:
        raise KeyError("secret detail")
    except KeyError as exc:
        hidden = error_answer(exc, "rid-1", details=False)
        shown = error_answer(exc, "rid-1", details=True)
    assert hidden.status == 500
    assert hidden.body == {"error": "internal server error", "request_id": "rid-1"}
    assert hidden.log == "exception"
    assert "secret detail" in shown.body["traceback"]
    assert "KeyError" in shown.body["traceback"]


def test_a_subclass_of_a_user_error_is_answered_by_its_parents_rule():
    class Custom(errors.ServingError):
        status_code = 422

    assert error_answer(Custom("nope")).status == 422


def test_a_bad_result_names_the_problem_in_every_mode():
    answer = error_answer(errors.BadResultError("predict() returned object"), "r", details=False)
    assert answer.status == 500
    assert answer.body["error"] == "predict() returned object"
    assert answer.log == "error"


def test_unrecoverable_is_fatal_and_hides_its_message_in_production():
    exc = errors.UnrecoverableError("gpu lost")
    assert error_answer(exc, details=False).body["error"] == "unrecoverable error"
    assert error_answer(exc, details=False).fatal
    assert "gpu lost" in error_answer(exc, details=True).body["error"]


def test_a_client_that_left_gets_nothing_sent():
    answer = error_answer(errors.ClientGone())
    assert (answer.status, answer.send) == (499, False)


def test_werkzeug_abort_keeps_its_status():
    from werkzeug.exceptions import Forbidden

    answer = error_answer(Forbidden("no entry"))
    assert (answer.status, answer.body) == (403, {"error": "no entry"})


def test_a_device_out_of_memory_is_503_with_retry_after_and_no_details_in_production():
    out_of_memory = type("OutOfMemoryError", (RuntimeError,), {"__module__": "torch.cuda"})
    answer = error_answer(out_of_memory("CUDA out of memory. Tried to allocate 2 GiB"), "r-1")
    assert answer.status == 503
    assert dict(answer.headers) == {b"retry-after": b"1"}
    assert answer.body == {
        "error": "out of device memory: retry later, or send a smaller input",
        "request_id": "r-1",
    }
    assert answer.log == "exception"
    assert error_answer(type("OutOfMemoryError", (RuntimeError,), {})("x")).status == 500
