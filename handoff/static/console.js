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

/* ---------- every page: the queue, live ---------- */

const queueListeners = [];
const notifyOn = () => localStorage.getItem("payrescue-notify") === "1";

// The same compact duration as the server's `waited` filter, in the agent's language (the
// formats come from the server's catalog: 4 min, 2 h 05 min, 3 days / 4 Min., 3 Tage).
const waitedFormats = JSON.parse(document.body.dataset.waited || "{}");
function fill(format, values) {
  return format.replace(/%\((\w+)\)[sd]/g, (_, name) => String(values[name]));
}
function waited(seconds) {
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return fill(waitedFormats.min || "%(n)s min", { n: minutes });
  const hours = Math.floor(minutes / 60);
  if (hours < 48) {
    return fill(waitedFormats.hm || "%(hours)s h %(minutes)s min",
      { hours, minutes: String(minutes % 60).padStart(2, "0") });
  }
  const days = Math.floor(hours / 24);
  return fill((days === 1 ? waitedFormats.day : waitedFormats.days) || "%(num)d days",
    { num: days });
}

function announce(title, body) {
  if (!notifyOn()) return;
  beep();
  if ("Notification" in window && Notification.permission === "granted") {
    new Notification(title, { body });
  }
}

function setUpEverywhere(body) {
  const baseTitle = document.title;
  const count = document.getElementById("waiting-count");
  let overdueSeen = null;  // conversation ids already announced as overdue
  let summary = null;

  function show() {
    if (!summary) return;
    const n = summary.waiting;
    document.title = n ? `(${n}) ${baseTitle}` : baseTitle;
    if (count) {
      count.textContent = summary.overdue ? `${n} · ${summary.overdue}!` : String(n);
      count.hidden = n === 0;
      count.classList.toggle("alert", summary.overdue > 0);
    }
  }

  async function load(fresh) {  // fresh: the ids of new handoffs, each announced
    const response = await fetch("/console/api/waiting", { credentials: "same-origin" });
    if (!response.ok) return;
    summary = await response.json();
    summary.loadedAt = Date.now();
    const overdue = summary.conversations.filter((c) => c.overdue).map((c) => c.id);
    if (overdueSeen === null) overdueSeen = new Set(overdue);  // the page's first look
    for (const c of summary.conversations.filter((item) => fresh.has(item.id))) {
      announce(`${body.dataset.newText}: ${c.member}`, c.reasons.join(", "));
    }
    show();
  }

  // waiting times cross the SLA without any event: checked every few seconds
  function tick() {
    if (!summary) return;
    const elapsed = (Date.now() - summary.loadedAt) / 1000;
    let overdue = 0;
    for (const c of summary.conversations) {
      if (c.waited_seconds + elapsed > summary.sla_seconds) {
        overdue += 1;
        if (!overdueSeen.has(c.id)) {
          overdueSeen.add(c.id);
          announce(`${body.dataset.overdueText}: ${c.member}`, `${waited(c.waited_seconds + elapsed)} · ${c.reasons.join(", ")}`);
        }
      }
    }
    summary.overdue = Math.max(summary.overdue, overdue);
    show();
  }

  // one look at the queue for a burst of events, but a notification for every new handoff
  let pending = null;
  let fresh = new Set();
  function loadSoon(conversation) {
    if (conversation) fresh.add(conversation);
    if (pending) return;
    pending = setTimeout(() => { pending = null; load(fresh); fresh = new Set(); }, 250);
  }
  const stream = new EventSource("/console/stream/queue");
  stream.addEventListener("open", () => {  // catch up after a reconnect
    loadSoon(null);
    queueListeners.forEach((listener) => listener({}));
  });
  stream.addEventListener("queue", (event) => {
    const data = JSON.parse(event.data);
    loadSoon(data.new ? data.conversation_id : null);
    queueListeners.forEach((listener) => listener(data));
  });
  setInterval(tick, 5000);
}

function setUpQueue(section) {
  const toggle = document.getElementById("notify-toggle");
  toggle.checked = notifyOn();
  toggle.addEventListener("change", () => {
    localStorage.setItem("payrescue-notify", toggle.checked ? "1" : "0");
    if (toggle.checked && "Notification" in window && Notification.permission === "default") {
      Notification.requestPermission();
    }
  });
  const params = new URLSearchParams({ view: section.dataset.view, q: section.dataset.q });
  const body = document.getElementById("queue-rows");
  const sla = Number(section.dataset.sla);
  let loadedAt = Date.now();
  async function refresh(fresh) {
    const response = await fetch("/console/queue/rows?" + params, { credentials: "same-origin" });
    if (!response.ok) return;
    body.innerHTML = await response.text();
    loadedAt = Date.now();
    if (fresh) {
      const row = body.querySelector(`tr[data-conversation="${fresh}"]`);
      if (row) row.classList.add("fresh");
    }
  }
  // waiting times and the SLA highlight move on without a reload
  setInterval(() => {
    const elapsed = (Date.now() - loadedAt) / 1000;
    body.querySelectorAll("tr[data-waited]").forEach((row) => {
      const seconds = Number(row.dataset.waited) + elapsed;
      row.querySelector(".since").textContent = waited(seconds);
      if (row.dataset.status === "waiting" && seconds > sla) row.classList.add("overdue");
    });
  }, 5000);
  // many events in a burst (a busy afternoon) cause one fetch, not one each
  let pending = null;
  let fresh = null;
  function refreshSoon(conversation) {
    if (conversation) fresh = conversation;
    if (pending) return;
    pending = setTimeout(() => { pending = null; refresh(fresh); fresh = null; }, 250);
  }
  queueListeners.push((data) => refreshSoon(data.new ? data.conversation_id : null));
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
  // colleagues in this conversation: "Lena is viewing", "Lena is typing…"
  const presence = document.getElementById("presence");
  const others = new Map();  // agent id → [text, state, expiry timer]
  function drawPresence() {
    presence.replaceChildren();
    for (const [text, state] of others.values()) {
      const item = document.createElement("span");
      item.className = `presence ${state}`;
      item.textContent = text;
      presence.appendChild(item);
    }
    presence.hidden = others.size === 0;
  }
  stream.addEventListener("presence", (event) => {
    const data = JSON.parse(event.data);
    const known = others.get(data.agent_id);
    if (known) clearTimeout(known[2]);
    if (data.state === "left") {
      others.delete(data.agent_id);
    } else {
      // typing fades after a few seconds; a viewer who vanished without a word after 40
      const forget = setTimeout(() => { others.delete(data.agent_id); drawPresence(); },
                                data.state === "typing" ? 6000 : 40000);
      others.set(data.agent_id, [data.text, data.state, forget]);
    }
    drawPresence();
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

  // quoting a member's message: Telegram shows it above the reply
  const quote = document.getElementById("quote");
  const quotePreview = document.getElementById("quote-preview");
  const unquote = () => { quote.value = ""; quotePreview.hidden = true; };
  document.getElementById("quote-cancel").addEventListener("click", unquote);
  document.getElementById("transcript").addEventListener("click", (event) => {
    const button = event.target.closest("button.quote");
    if (!button) return;
    quote.value = button.dataset.quote;
    const said = button.closest(".line").querySelector(".text");
    quotePreview.querySelector("span").textContent = `« ${said ? said.textContent : ""} »`;
    quotePreview.hidden = false;
    box.focus();
  });

  async function send(kind) {
    const text = box.value;
    if (!text.trim() || box.closest(".taken")) return;
    box.disabled = true;
    const fields = { text };
    if (kind === "reply" && quote.value) fields.quote = quote.value;
    const result = await post(`/console/conversations/${id}/${kind}`, fields);
    box.disabled = false;
    if (result.ok) { box.value = ""; showError(""); form.classList.remove("note-mode"); unquote(); } else { showError(result.error || "?"); }
    box.focus();
  }

  function closeMenu() { menu.hidden = true; choices = []; }

  function drawMenu() {
    menu.replaceChildren();
    choices.forEach((answer, index) => {
      const item = document.createElement("li");
      const name = document.createElement("div");
      name.textContent = `/${answer.shortcut} · ${answer.title} (${answer.language.toUpperCase()})`;
      const preview = document.createElement("div");  // what the member will read
      preview.className = "preview";
      preview.textContent = answer.text.length > 160 ? `${answer.text.slice(0, 160)}…` : answer.text;
      item.append(name, preview);
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
      send(form.classList.contains("note-mode") ? "note" : "reply");
    }
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    send(event.submitter && event.submitter.id === "note-button" ? "note" : "reply");
  });
}

/* ---------- keyboard ---------- */

function setUpKeys() {
  const help = document.getElementById("shortcuts");
  const click = (selector) => { const el = document.querySelector(selector); if (el && !el.disabled) el.click(); };
  const actions = {
    "n": () => { window.location.href = "/console/next"; },
    "c": () => click("#claim"),
    "r": () => { const box = document.getElementById("reply"); if (box) box.focus(); },
    "i": () => {
      const box = document.getElementById("reply");
      if (!box) return;
      box.closest("form").classList.add("note-mode");
      box.focus();
    },
    "e": () => click("#resolve"),
    "/": () => {
      const box = document.getElementById("reply");
      if (!box) return;
      box.focus();
      box.value = "/";
      box.dispatchEvent(new Event("input"));
    },
    "?": () => { if (help) { if (help.open) help.close(); else help.showModal(); } },
  };
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.isComposing) return;
    const target = event.target;
    if (target.closest && target.closest("input, textarea, select, [contenteditable]")) {
      if (event.key === "Escape" && target.blur) target.blur();
      return;
    }
    const action = actions[event.key];
    if (action) { event.preventDefault(); action(); }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  // on a phone the context panel folds away under the chat, one tap opens it
  if (window.matchMedia("(max-width: 700px)").matches) {
    document.querySelectorAll("details.fold").forEach((fold) => { fold.open = false; });
  }
  if (document.body.dataset.live) { setUpEverywhere(document.body); setUpKeys(); }
  const queue = document.querySelector("section.queue");
  if (queue) setUpQueue(queue);
  const conversation = document.querySelector(".conversation");
  if (conversation) setUpConversation(conversation);
});
