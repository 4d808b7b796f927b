"""The web page in a real browser (Debian's Chromium driven by Playwright) against the local API gateway."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.endpoint_double import NO_WORD_WARNING, EndpointDouble, running_endpoint
from tests.fixtures.local import RunningGateway

pytestmark = pytest.mark.e2e

SCREENSHOT = Path("/tmp/sentiflow-page.png")
POSITIVE = "A wonderful, brilliant film. I loved every minute; the acting is excellent and the story a masterpiece."
NEGATIVE = "An awful, boring mess. The worst film I have seen this year and a complete waste of two hours."
XSS = 'Great film <script>window.__xss=1</script> <img src=x onerror="window.__xss=2"> & more'


@pytest.fixture
def endpoint(gateway: RunningGateway) -> Iterator[EndpointDouble]:
    with running_endpoint() as double:
        gateway.point("sentiment", double.url, "5")
        yield double


@pytest.fixture
def page(browser: Any, gateway: RunningGateway) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1200, "height": 820})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{gateway.url}/")
    page.errors = errors
    yield page
    context.close()


def submit(page: Any, review: str) -> None:
    page.fill("#review", review)
    page.click("#submit")
    page.wait_for_function(
        "() => document.querySelector('#result-card').getAttribute('aria-busy') === 'false'"
        " && (!document.querySelector('#result').hidden || !document.querySelector('#message').hidden)"
    )


def test_positive_and_negative_reviews_get_the_right_labels(page: Any, endpoint: EndpointDouble) -> None:
    submit(page, POSITIVE)
    assert page.text_content("#result-label") == "Positive"
    assert page.get_attribute("#result-label", "data-label") == "positive"
    assert page.text_content("#result-confidence-text") == "92.0% confident"
    assert page.get_attribute("#confidence-meter", "aria-valuenow") == "92"
    assert page.text_content("#result-version") == "5"
    assert page.text_content("#result-latency").endswith("ms")
    assert page.text_content("#result-review") == POSITIVE
    assert page.text_content("#result-known") == "9"
    assert page.is_hidden("#result-warning")
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    submit(page, NEGATIVE)
    assert page.text_content("#result-label") == "Negative"
    assert page.text_content("#result-confidence-text") == "92.0% confident"
    assert page.is_hidden("#message")
    assert page.errors == []


@pytest.mark.parametrize("review", ["the and of a", "<br /><br />"])
def test_a_review_the_model_knew_no_word_of_shows_the_warning(page: Any, endpoint: EndpointDouble, review: str) -> None:
    submit(page, review)
    assert page.is_visible("#result-warning")
    assert page.text_content("#result-warning") == f"Not a real verdict: {NO_WORD_WARNING}"
    assert page.text_content("#result-known") == "0"
    assert page.text_content("#result-review") == review  # markup stays text
    assert page.evaluate("() => document.querySelectorAll('#result-review *, #result-warning *').length") == 0
    page.screenshot(path=str(SCREENSHOT.with_name("sentiflow-page-guess.png")), full_page=True)
    submit(page, POSITIVE)  # the next answer clears it
    assert page.is_hidden("#result-warning")
    assert page.errors == []


def test_review_html_is_shown_as_text_and_never_runs(page: Any, endpoint: EndpointDouble) -> None:
    submit(page, XSS)
    assert page.text_content("#result-review") == XSS
    assert page.evaluate("() => document.querySelectorAll('#result-review *').length") == 0
    assert page.evaluate("() => document.querySelectorAll('img, script:not([src])').length") == 0
    page.wait_for_timeout(300)  # give an onerror handler time to fire if the markup had been parsed
    assert page.evaluate("() => typeof window.__xss") == "undefined"
    assert page.errors == []


def test_no_model_deployed_is_a_clear_message(page: Any) -> None:
    submit(page, POSITIVE)
    assert page.is_visible("#message")
    assert page.get_attribute("#message", "data-kind") == "warning"
    assert "No model is deployed" in page.text_content("#message-title")
    assert page.is_hidden("#result")
    page.screenshot(path=str(SCREENSHOT.with_name("sentiflow-page-503.png")), full_page=True)


def test_empty_review_is_rejected_in_the_page(page: Any, endpoint: EndpointDouble) -> None:
    page.fill("#review", "   ")
    page.click("#submit")
    assert page.text_content("#message-title") == "The review is empty."
    assert endpoint.requests == []


def test_server_errors_show_the_request_id(page: Any, endpoint: EndpointDouble, gateway: RunningGateway) -> None:
    gateway.point("broken", endpoint.url, "5")
    submit(page, POSITIVE)
    assert "HTTP 502" in page.text_content("#message-title")
    assert "request id" in page.text_content("#message-body")


def test_a_review_the_model_rejects_shows_its_message(
    page: Any, endpoint: EndpointDouble, gateway: RunningGateway
) -> None:
    gateway.point("rejects", endpoint.url, "5")
    submit(page, POSITIVE)
    assert page.text_content("#message-title") == "The review was not accepted."
    assert page.text_content("#message-body") == "review is not valid UTF-8"


def test_api_url_override(browser: Any, gateway: RunningGateway, endpoint: EndpointDouble, tmp_path: Path) -> None:
    """A page served elsewhere (here: a file) reaches the API through window.SENTIFLOW_API_URL, with CORS."""
    from importlib import resources

    site = tmp_path / "site"
    site.mkdir()
    for name in ("index.html", "app.js", "style.css"):
        (site / name).write_bytes(resources.files("web").joinpath(name).read_bytes())
    context = browser.new_context()
    context.add_init_script(f"window.SENTIFLOW_API_URL = {gateway.url + '/'!r};")
    page = context.new_page()
    page.goto(site.joinpath("index.html").as_uri())
    submit(page, NEGATIVE)
    assert page.text_content("#result-label") == "Negative"
    context.close()
