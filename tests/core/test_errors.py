"""Users get a sentence for an unexpected exception; the log gets its text and traceback."""

from __future__ import annotations

import logging

import pytest
import requests
import responses

from pipelines.core.airflow import AirflowClient, AirflowUnavailable
from pipelines.core.errors import user_error


def test_user_error_is_a_sentence_and_the_log_has_the_detail(caplog):
    try:
        int([1])  # TypeError: int() argument must be a string, …
    except TypeError as exc:
        text = user_error(exc, doing="parsing a count")
    assert text.startswith("an internal error (reference ")
    assert "int()" not in text
    assert "TypeError" not in text
    reference = text.split("reference ")[1][:8]
    (record,) = [r for r in caplog.records if r.name == "pipelines.errors"]
    assert record.levelno == logging.ERROR
    assert reference in record.getMessage()
    assert "while parsing a count" in record.getMessage()
    assert "TypeError: int() argument" in record.getMessage()
    assert record.exc_info[0] is TypeError


def test_two_errors_get_two_references():
    first, second = user_error(ValueError("x")), user_error(ValueError("x"))
    assert first != second


@responses.activate
@pytest.mark.parametrize(
    ("raised", "said"),
    [
        (requests.ConnectTimeout("HTTPConnectionPool(host=…) 0x7f…"), "it did not answer in time"),
        (requests.ConnectionError("Max retries exceeded 0x7f…"), "the connection failed"),
        (requests.exceptions.SSLError("CERTIFICATE_VERIFY_FAILED 0x7f…"), "the TLS handshake"),
    ],
)
def test_airflow_unreachable_says_why_in_words_not_requests_text(settings, raised, said):
    responses.add(responses.POST, "http://airflow.test:8080/auth/token", body=raised)
    client = AirflowClient("http://airflow.test:8080", "portal", "secret", retries=0)
    with pytest.raises(AirflowUnavailable) as caught:
        client.get_dag("d1")
    assert caught.value.message.startswith("Airflow at http://airflow.test:8080 is unreachable: ")
    assert said in caught.value.message
    assert "0x7f" not in caught.value.message
