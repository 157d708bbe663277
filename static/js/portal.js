// Page behaviour that used to sit in inline handlers: the Content-Security-Policy allows scripts
// from this origin only. Delegated from the document, so fragments htmx swaps in work too.
"use strict";

// <select data-autosubmit>: choosing a filter submits its form.
document.addEventListener("change", (event) => {
  const select = event.target.closest("select[data-autosubmit]");
  if (select && select.form) select.form.submit();
});

// <form data-confirm="question">: ask before a plain (non-htmx) post.
document.addEventListener("submit", (event) => {
  const form = event.target.closest("form[data-confirm]");
  if (form && !window.confirm(form.dataset.confirm)) event.preventDefault();
});

// <button data-fill="#input" data-value="…">: put the value in the input, as if typed.
document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-fill]");
  if (!button) return;
  const input = document.querySelector(button.dataset.fill);
  input.value = button.dataset.value;
  input.dispatchEvent(new Event("input", { bubbles: true }));
});

// [data-height="42"]: a bar's height in percent (style attributes are not allowed inline).
function sizeBars(root) {
  root.querySelectorAll("[data-height]").forEach((bar) => {
    bar.style.height = `${Number(bar.dataset.height)}%`;
  });
}
if (window.htmx) {
  htmx.onLoad(sizeBars);
} else {
  document.addEventListener("DOMContentLoaded", () => sizeBars(document));
}
