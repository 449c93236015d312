// PayRescue agent console. Loaded from /console/static (the CSP allows no inline script).
// Server-sent HTML fragments are rendered by Jinja2 with autoescaping, so member text
// arrives escaped; everything built here uses textContent.
"use strict";

const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

async function post(url, fields) {
  const body = new URLSearchParams(fields || {});
  const response = await fetch(url, {
    method: "POST", body, credentials: "same-origin",
    headers: { "X-CSRF-Token": csrf(), "Accept": "application/json" },
  });
  let data = {};
  try { data = await response.json(); } catch (e) { data = { ok: false, error: response.statusText }; }
  return data;
}

function fragment(html) {
  const template = document.createElement("template");
  template.innerHTML = html.trim();
  return template.content.firstElementChild;
}

/* ---------- the queue ---------- */

function beep() {
  try {
    const audio = new AudioContext();
    const tone = audio.createOscillator();
    const gain = audio.createGain();
    tone.frequency.value = 880;
    gain.gain.value = 0.08;
    tone.connect(gain).connect(audio.destination);
    tone.start();
    tone.stop(audio.currentTime + 0.18);
  } catch (e) { /* no audio device: the highlighted row still shows the news */ }
}

function setUpQueue(section) {
  const toggle = document.getElementById("notify-toggle");
  toggle.checked = localStorage.getItem("payrescue-notify") === "1";
  toggle.addEventListener("change", () => {
    localStorage.setItem("payrescue-notify", toggle.checked ? "1" : "0");
    if (toggle.checked && "Notification" in window && Notification.permission === "default") {
      Notification.requestPermission();
    }
  });
  const params = new URLSearchParams({ view: section.dataset.view, q: section.dataset.q });
  const body = document.getElementById("queue-rows");
  async function refresh(fresh) {
    const response = await fetch("/console/queue/rows?" + params, { credentials: "same-origin" });
    if (!response.ok) return;
    body.innerHTML = await response.text();
    if (fresh) {
      const row = body.querySelector(`tr[data-conversation="${fresh}"]`);
      if (row) row.classList.add("fresh");
    }
  }
  // many events in a burst (a busy afternoon) cause one fetch, not one each
  let pending = null;
  let fresh = null;
  function refreshSoon(conversation) {
    if (conversation) fresh = conversation;
    if (pending) return;
    pending = setTimeout(() => { pending = null; refresh(fresh); fresh = null; }, 250);
  }
  const stream = new EventSource("/console/stream/queue");
  stream.addEventListener("open", () => refreshSoon(null));  // catch up after a reconnect
  stream.addEventListener("queue", (event) => {
    const data = JSON.parse(event.data);
    refreshSoon(data.new ? data.conversation_id : null);
    if (data.new && toggle.checked) {
      beep();
      if ("Notification" in window && Notification.permission === "granted") {
        new Notification("PayRescue", { body: document.title });
      }
    }
  });
}

/* ---------- the conversation ---------- */

function lockAnswering(root) {
  root.classList.add("taken");
  root.querySelectorAll("form.claim, form.reply, .actions form").forEach((form) => {
    form.querySelectorAll("textarea, button, input, select").forEach((field) => { field.disabled = true; });
  });
}

function setUpConversation(root) {
  const id = root.dataset.conversation;
  const transcript = document.getElementById("transcript");
  const errorBox = document.getElementById("error");
  const showError = (text) => { errorBox.textContent = text; errorBox.hidden = !text; };
  const scrollDown = () => { transcript.scrollTop = transcript.scrollHeight; };
  scrollDown();

  const stream = new EventSource(`/console/stream/conversations/${id}?after=${root.dataset.lastId}`);
  stream.addEventListener("line", (event) => {
    const data = JSON.parse(event.data);
    if (document.getElementById(`line-${data.id}`)) return;  // never twice
    transcript.appendChild(fragment(data.html));
    scrollDown();
  });
  stream.addEventListener("line-update", (event) => {
    const data = JSON.parse(event.data);
    const old = document.getElementById(`line-${data.id}`);
    if (old) { old.replaceWith(fragment(data.html)); return; }
    transcript.appendChild(fragment(data.html));  // a bot message first seen when delivered
    scrollDown();
  });
  stream.addEventListener("status", (event) => {
    const data = JSON.parse(event.data);
    const owner = String(data.owner_id || "");
    if (data.status === root.dataset.status && owner === root.dataset.owner) return;
    if (data.status === "assigned" && owner !== root.dataset.agent) {
      // someone else has it: say who, at once, and lock everything that would answer
      root.dataset.status = data.status;
      root.dataset.owner = owner;
      lockAnswering(root);
      showError(data.taken || "");
      document.getElementById("status").textContent = data.owner || "";
      return;
    }
    window.location.reload();  // the available actions change with the owner
  });
  const typing = document.getElementById("typing");
  let typingTimer = null;
  stream.addEventListener("typing", () => {
    if (root.dataset.owner === root.dataset.agent) return;  // our own typing
    typing.hidden = false;
    clearTimeout(typingTimer);
    typingTimer = setTimeout(() => { typing.hidden = true; }, 5000);
  });

  const form = document.getElementById("reply-form");
  if (form) setUpReply(form, id, showError);
}

function setUpReply(form, id, showError) {
  const box = document.getElementById("reply");
  const menu = document.getElementById("canned-menu");
  let answers = null;
  let choices = [];
  let selected = 0;
  let lastTyping = 0;

  async function send(kind) {
    const text = box.value;
    if (!text.trim() || box.closest(".taken")) return;
    box.disabled = true;
    const result = await post(`/console/conversations/${id}/${kind}`, { text });
    box.disabled = false;
    if (result.ok) { box.value = ""; showError(""); } else { showError(result.error || "?"); }
    box.focus();
  }

  function closeMenu() { menu.hidden = true; choices = []; }

  function drawMenu() {
    menu.replaceChildren();
    choices.forEach((answer, index) => {
      const item = document.createElement("li");
      item.textContent = `/${answer.shortcut} · ${answer.title} (${answer.language.toUpperCase()})`;
      item.setAttribute("role", "option");
      item.setAttribute("aria-selected", index === selected ? "true" : "false");
      item.addEventListener("mousedown", (event) => { event.preventDefault(); pick(index); });
      menu.appendChild(item);
    });
    menu.hidden = choices.length === 0;
  }

  function pick(index) {
    box.value = choices[index].text;
    closeMenu();
    box.focus();
  }

  function loadAnswers() {  // one request per page, however fast the agent types
    if (answers === null) {
      answers = fetch(`/console/api/conversations/${id}/canned`, { credentials: "same-origin" })
        .then((response) => (response.ok ? response.json() : []));
    }
    return answers;
  }

  async function offerCanned() {
    if (!/^\/[a-z0-9_-]*$/.test(box.value)) { closeMenu(); return; }
    const list = await loadAnswers();
    // read the box again: the agent may have typed on or picked an answer meanwhile
    const match = /^\/([a-z0-9_-]*)$/.exec(box.value);
    if (!match) { closeMenu(); return; }
    choices = list.filter((answer) => answer.shortcut.startsWith(match[1]));
    selected = 0;
    drawMenu();
  }

  box.addEventListener("input", () => {
    offerCanned();
    const now = Date.now();
    if (now - lastTyping > 4000 && box.value) {
      lastTyping = now;
      post(`/console/conversations/${id}/typing`);
    }
  });
  box.addEventListener("keydown", (event) => {
    if (!menu.hidden && choices.length) {
      if (event.key === "ArrowDown" || event.key === "ArrowUp") {
        selected = (selected + (event.key === "ArrowDown" ? 1 : choices.length - 1)) % choices.length;
        drawMenu();
        event.preventDefault();
        return;
      }
      if (event.key === "Enter" || event.key === "Tab") { event.preventDefault(); pick(selected); return; }
      if (event.key === "Escape") { closeMenu(); return; }
    }
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send("reply");
    }
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    send(event.submitter && event.submitter.id === "note-button" ? "note" : "reply");
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const queue = document.querySelector("section.queue");
  if (queue) setUpQueue(queue);
  const conversation = document.querySelector(".conversation");
  if (conversation) setUpConversation(conversation);
});
