// taskq console: confirm before an action, and refresh live pages in place. No build step.
"use strict";

document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form.dataset && form.dataset.confirm;
  if (question && !window.confirm(question)) event.preventDefault();
});

function localTimes(root) {
  // Times are rendered in UTC; the title shows the same instant in the browser's zone.
  for (const el of root.querySelectorAll("time[datetime]")) {
    el.title = new Date(el.getAttribute("datetime")).toString();
  }
}

async function refresh(live) {
  if (document.hidden) return;
  try {
    const response = await fetch(location.href, {credentials: "same-origin", headers: {Accept: "text/html"}});
    if (!response.ok) return;
    const page = new DOMParser().parseFromString(await response.text(), "text/html");
    const fresh = page.getElementById("live");
    if (fresh) {
      live.replaceWith(fresh);
      localTimes(fresh);
      schedule(fresh);
      return;
    }
  } catch (error) {
    // offline for a moment: try again at the next tick
  }
  schedule(live);
}

function schedule(live) {
  const every = Number(live.dataset.refresh || 0);
  if (every > 0) setTimeout(() => refresh(document.getElementById("live")), every);
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  const stamp = document.getElementById("stamp");
  const live = document.getElementById("live");
  if (live) schedule(live);
  document.body.dataset.ready = "1";
});
