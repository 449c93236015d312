// Team group page of the Telegram emulator: a supergroup with forum topics, as the agents'
// Telegram app shows it. Talks only to the control API (/_emulator). Every text goes in
// through textContent: neither the bot nor a member can inject markup.
"use strict";

(() => {
  const API = "/_emulator";
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(window.location.search);
  const state = {
    groupId: params.get("group") ? Number(params.get("group")) : null,
    threadId: params.get("topic") ? Number(params.get("topic")) : null,
    writer: null,
    names: new Map(),
    version: -1,
    poll: null,
    seenAnswers: new Set(),
  };

  async function api(path, options = {}) {
    const init = { ...options, headers: { "Content-Type": "application/json" } };
    if (options.body !== undefined) init.body = JSON.stringify(options.body);
    const response = await fetch(API + path, init);
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
    return data;
  }

  function showNotice(text) {
    $("notice").textContent = text;
    $("notice").hidden = !text;
  }

  function updateUrl() {
    const url = new URL(window.location.href);
    url.search = "";
    if (state.groupId) url.searchParams.set("group", String(state.groupId));
    if (state.threadId) url.searchParams.set("topic", String(state.threadId));
    window.history.replaceState(null, "", url);
  }

  async function loadNames() {
    const { users } = await api("/users");
    for (const user of users) {
      state.names.set(user.id, [user.first_name, user.last_name].filter(Boolean).join(" "));
    }
  }

  async function loadGroups() {
    const { groups } = await api("/groups");
    const select = $("group-select");
    select.replaceChildren();
    for (const group of groups) {
      const option = document.createElement("option");
      option.value = String(group.id);
      option.textContent = group.title;
      select.append(option);
    }
    $("no-groups").hidden = groups.length > 0;
    if (!groups.some((g) => g.id === state.groupId)) state.groupId = groups.length ? groups[0].id : null;
    if (state.groupId) select.value = String(state.groupId);
  }

  function renderWriters(group) {
    const select = $("writer-select");
    const people = group.members.filter((m) => state.names.has(m.id));
    if (select.options.length === people.length) return;
    select.replaceChildren();
    for (const member of people) {
      const option = document.createElement("option");
      option.value = String(member.id);
      option.textContent = `${state.names.get(member.id)} (${member.status})`;
      select.append(option);
    }
    if (!people.some((m) => m.id === state.writer) && people.length) state.writer = people[0].id;
    select.value = String(state.writer);
  }

  function renderTopics(group) {
    const list = $("user-list");
    list.replaceChildren();
    for (const topic of group.topics.filter((t) => !t.deleted).reverse()) {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = `${topic.closed ? "🔒 " : "# "}${topic.name}`;
      button.setAttribute("aria-current", String(topic.message_thread_id === state.threadId));
      button.addEventListener("click", () => openTopic(topic.message_thread_id));
      item.append(button);
      list.append(item);
    }
  }

  function serviceText(service) {
    const [kind, body] = Object.entries(service)[0];
    const texts = {
      forum_topic_created: `Topic created: ${body.name || ""}`,
      forum_topic_edited: `Topic renamed${body.name ? `: ${body.name}` : ""}`,
      forum_topic_closed: "Topic closed",
      forum_topic_reopened: "Topic reopened",
    };
    return texts[kind] || kind;
  }

  function renderMessage(message) {
    const item = document.createElement("li");
    if (message.service) {
      item.className = "msg bot deleted";
      item.textContent = serviceText(message.service);
      return item;
    }
    const own = !message.from_bot && message.from.id === state.writer;
    item.className = `msg ${own ? "member" : "bot"}`;
    const who = document.createElement("div");
    who.className = "meta";
    who.textContent = message.from_bot ? message.from.first_name : (state.names.get(message.from.id) || message.from.first_name);
    item.append(who);
    if (message.photo) {
      const img = document.createElement("img");
      img.src = `${API}/files/${encodeURIComponent(message.photo[message.photo.length - 1].file_id)}`;
      img.alt = "photo";
      item.append(img);
    } else if (message.media) {
      const note = document.createElement("div");
      note.textContent = `[${message.media.kind}]`;
      item.append(note);
    }
    const body = document.createElement("div");
    body.textContent = message.plain_text ?? message.caption_plain ?? "";
    item.append(body);
    const rows = message.reply_markup && message.reply_markup.inline_keyboard;
    if (rows) {
      const keyboard = document.createElement("div");
      keyboard.className = "keyboard";
      for (const row of rows) {
        const rowElement = document.createElement("div");
        rowElement.className = "row";
        for (const button of row) {
          const element = document.createElement("button");
          element.type = "button";
          element.textContent = button.text;
          element.addEventListener("click", () => act(`/groups/${state.groupId}/callback`, {
            user_id: state.writer, message_id: message.message_id, data: button.callback_data,
          }));
          rowElement.append(element);
        }
        keyboard.append(rowElement);
      }
      item.append(keyboard);
    }
    const meta = document.createElement("div");
    meta.className = "meta";
    const time = new Date(message.date * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    meta.textContent = message.edit_date ? `edited · ${time}` : time;
    item.append(meta);
    return item;
  }

  function render(data) {
    renderWriters(data);
    renderTopics(data);
    const topic = data.topics.find((t) => t.message_thread_id === state.threadId && !t.deleted);
    $("chat-title").textContent = topic ? topic.name : "Pick a topic";
    $("chat-subtitle").textContent = topic ? (topic.closed ? "closed" : data.title) : data.title;
    $("composer").hidden = !topic;
    const list = $("messages");
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    list.replaceChildren(...(topic ? data.messages.map(renderMessage) : []));
    if (atBottom) list.scrollTop = list.scrollHeight;
    for (const answer of data.callback_answers) {
      if (state.seenAnswers.has(answer.callback_query_id)) continue;
      state.seenAnswers.add(answer.callback_query_id);
      if (answer.text && state.version >= 0) {
        if (answer.show_alert) window.alert(answer.text);
        else showNotice(answer.text);
      }
    }
  }

  function startPolling() {
    if (state.poll) state.poll.abort();
    const controller = new AbortController();
    state.poll = controller;
    (async () => {
      while (!controller.signal.aborted && state.groupId) {
        try {
          const thread = state.threadId ? `&thread_id=${state.threadId}` : "";
          const path = `/groups/${state.groupId}/messages?after_version=${state.version}&wait=25${thread}`;
          const response = await fetch(API + path, { signal: controller.signal });
          const data = await response.json();
          if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
          if (data.version !== state.version) {
            await loadNames();
            render(data);
            state.version = data.version;
          }
        } catch (error) {
          if (controller.signal.aborted) return;
          await new Promise((resolve) => { setTimeout(resolve, 1000); });
        }
      }
    })();
  }

  function openTopic(threadId) {
    state.threadId = threadId;
    state.version = -1;
    document.body.classList.add("chat-open");
    showNotice("");
    updateUrl();
    startPolling();
  }

  async function act(path, body) {
    try {
      showNotice("");
      await api(path, { method: "POST", body });
    } catch (error) {
      showNotice(error.message);
    }
  }

  function wireUp() {
    $("group-select").addEventListener("change", (event) => {
      state.groupId = Number(event.target.value);
      state.threadId = null;
      state.version = -1;
      updateUrl();
      startPolling();
    });
    $("writer-select").addEventListener("change", (event) => {
      state.writer = Number(event.target.value);
      state.version = -1;
      startPolling();
    });
    $("composer").addEventListener("submit", async (event) => {
      event.preventDefault();
      const input = $("text-input");
      const text = input.value;
      if (!text.trim() || !state.threadId) return;
      input.value = "";
      await act(`/groups/${state.groupId}/messages`, { user_id: state.writer, text, thread_id: state.threadId });
    });
    $("back").addEventListener("click", () => {
      state.threadId = null;
      document.body.classList.remove("chat-open");
      updateUrl();
      startPolling();
    });
  }

  async function main() {
    wireUp();
    try {
      await loadNames();
      await loadGroups();
      if (state.threadId) document.body.classList.add("chat-open");
      updateUrl();
      startPolling();
    } catch (error) {
      showNotice(`The emulator is not reachable: ${error.message}`);
    }
  }

  main();
})();
