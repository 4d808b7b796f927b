// sentiflow page: POST the review to the API and show the answer.
// Nothing from the user or the API is ever inserted as HTML: every value goes through textContent.
"use strict";

(function () {
  const MAX_CHARS = 20000;
  const TIMEOUT_MS = 35000;
  const EXAMPLES = {
    positive:
      "What a wonderful film. The performances are superb, the script is sharp and funny, and the ending " +
      "moved me to tears. One of the best movies I have seen in years; I loved every minute of it.",
    negative:
      "A boring, badly acted mess. The plot makes no sense, the dialogue is awful and the two hours felt " +
      "like ten. One of the worst movies I have ever seen; a complete waste of time.",
  };

  /** The API's /predict URL: window.SENTIFLOW_API_URL, else the page's meta tag, else relative. */
  function predictUrl() {
    const meta = document.querySelector('meta[name="sentiflow-api-url"]');
    const base = (window.SENTIFLOW_API_URL || (meta && meta.content) || "").trim();
    if (!base) return "./predict";
    return base.replace(/\/+$/, "").replace(/\/predict$/, "") + "/predict";
  }

  const $ = (id) => document.getElementById(id);
  const form = $("review-form");
  const textarea = $("review");
  const submit = $("submit");
  const counter = $("review-count");
  const card = $("result-card");
  const placeholder = $("placeholder");
  const result = $("result");
  const message = $("message");
  let inFlight = null;

  function updateCount() {
    const n = textarea.value.length;
    counter.textContent = `${n.toLocaleString("en-US")} / ${MAX_CHARS.toLocaleString("en-US")}`;
    counter.classList.toggle("over", n > MAX_CHARS);
  }

  function setBusy(busy) {
    submit.disabled = busy;
    submit.classList.toggle("busy", busy);
    submit.querySelector(".button-label").textContent = busy ? "Analyzing…" : "Analyze sentiment";
    card.setAttribute("aria-busy", String(busy));
  }

  function showMessage(kind, title, body) {
    placeholder.hidden = true;
    result.hidden = true;
    message.hidden = false;
    message.dataset.kind = kind;
    $("message-title").textContent = title;
    $("message-body").textContent = body;
  }

  function formatMs(ms) {
    if (typeof ms !== "number" || !isFinite(ms)) return "—";
    return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`;
  }

  function showResult(data, review, roundTripMs) {
    const label = data.label === "positive" ? "positive" : "negative";
    const score = Number(data.score);
    let confidence = Number(data.confidence);
    if (!isFinite(confidence)) confidence = isFinite(score) ? Math.max(score, 1 - score) : 0;
    const percent = Math.round(confidence * 1000) / 10;

    placeholder.hidden = true;
    message.hidden = true;
    result.hidden = false;

    const pill = $("result-label");
    pill.textContent = label === "positive" ? "Positive" : "Negative";
    pill.dataset.label = label;
    $("result-confidence-text").textContent = `${percent.toFixed(1)}% confident`;
    const meter = $("confidence-meter");
    meter.setAttribute("aria-valuenow", String(percent));
    meter.setAttribute("aria-valuetext", `${percent.toFixed(1)} percent ${label}`);
    meter.dataset.label = label;
    $("confidence-fill").style.width = `${Math.max(0, Math.min(100, percent))}%`;
    $("result-version").textContent =
      data.model_version === null || data.model_version === undefined ? "unknown" : String(data.model_version);
    $("result-known").textContent = Number.isInteger(data.known_words) ? String(data.known_words) : "—";
    // The model knew no word of the review (only stopwords or markup): the score is a guess, and the page says so.
    const warning = $("result-warning");
    const hasWarning = typeof data.warning === "string" && data.warning.trim() !== "";
    warning.textContent = hasWarning ? `Not a real verdict: ${data.warning}` : "";
    warning.hidden = !hasWarning;
    card.dataset.guess = String(hasWarning);
    $("result-latency").textContent = formatMs(data.latency_ms);
    $("result-roundtrip").textContent = formatMs(roundTripMs);
    $("result-review").textContent = review; // text, never HTML
  }

  async function readJson(response) {
    try {
      return await response.json();
    } catch (_) {
      return {};
    }
  }

  async function analyze(review) {
    if (inFlight) inFlight.abort();
    const controller = new AbortController();
    inFlight = controller;
    const timer = setTimeout(() => controller.abort("timeout"), TIMEOUT_MS);
    const started = performance.now();
    setBusy(true);
    try {
      const response = await fetch(predictUrl(), {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ review }),
        signal: controller.signal,
      });
      const data = await readJson(response);
      const roundTrip = performance.now() - started;
      const detail = typeof data.message === "string" ? data.message : "";
      const requestId = typeof data.request_id === "string" ? ` (request id ${data.request_id})` : "";
      if (response.ok && (data.label === "positive" || data.label === "negative")) {
        showResult(data, review, roundTrip);
      } else if (response.status === 503) {
        showMessage(
          "warning",
          "No model is deployed right now.",
          "The API is up but is not serving a model. Deploy one (for example with: sentiflow run) and try again."
        );
      } else if (response.status >= 400 && response.status < 500) {
        showMessage("error", "The review was not accepted.", detail || "Check the review and try again.");
      } else {
        showMessage(
          "error",
          `The API answered with an error (HTTP ${response.status}).`,
          (detail || "Something went wrong on the server; try again in a moment.") + requestId
        );
      }
    } catch (error) {
      if (inFlight !== controller) return; // superseded by a newer submission
      const timedOut = controller.signal.reason === "timeout";
      showMessage(
        "error",
        timedOut ? "The API took too long to answer." : "Could not reach the API.",
        timedOut ? "Try again in a moment." : "Check that the API is running and that you are online."
      );
    } finally {
      clearTimeout(timer);
      if (inFlight === controller) {
        inFlight = null;
        setBusy(false);
      }
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const review = textarea.value;
    if (!review.trim()) {
      showMessage("error", "The review is empty.", "Type or paste a movie review first.");
      textarea.focus();
      return;
    }
    if (review.length > MAX_CHARS) {
      showMessage(
        "error",
        "The review is too long.",
        `It has ${review.length.toLocaleString("en-US")} characters; the limit is ${MAX_CHARS.toLocaleString("en-US")}.`
      );
      return;
    }
    analyze(review);
  });

  textarea.addEventListener("input", updateCount);
  textarea.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  document.querySelectorAll("[data-example]").forEach((button) => {
    button.addEventListener("click", () => {
      textarea.value = EXAMPLES[button.dataset.example] || "";
      updateCount();
      textarea.focus();
    });
  });
  updateCount();
})();
