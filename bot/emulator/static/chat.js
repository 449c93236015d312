// Member chat page of the Telegram emulator. Talks only to the control API (/_emulator).
// Safety: every piece of text goes into the page through text nodes or textContent; bot
// formatting is rebuilt from Telegram entities with a fixed set of elements, so neither
// the bot nor a member can inject markup.
"use strict";

(() => {
  const API = "/_emulator";
  const SAFE_LINK = /^(https?:|tg:|mailto:)/i;
  const $ = (id) => document.getElementById(id);

  const params = new URLSearchParams(window.location.search);
  const state = {
    bot: params.get("bot") || "",
    userId: params.get("user") ? Number(params.get("user")) : null,
    startPayload: params.get("start"),
    version: -1,
    poll: null, // AbortController of the running long poll
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

  function botQuery(prefix = "?") {
    return state.bot ? `${prefix}bot=${encodeURIComponent(state.bot)}` : "";
  }

  function showNotice(text) {
    const notice = $("notice");
    notice.textContent = text;
    notice.hidden = !text;
  }

  function updateUrl() {
    const url = new URL(window.location.href);
    url.search = "";
    if (state.bot) url.searchParams.set("bot", state.bot);
    if (state.userId) url.searchParams.set("user", String(state.userId));
    // The start payload is deliberately dropped: a reload must not tap the link again.
    window.history.replaceState(null, "", url);
  }

  // --- bots and members --------------------------------------------------------------

  async function loadBots() {
    const { bots } = await api("/bots");
    const select = $("bot-select");
    select.replaceChildren();
    for (const bot of bots) {
      const option = document.createElement("option");
      option.value = bot.username;
      option.textContent = `@${bot.username}`;
      select.append(option);
    }
    if (!state.bot && bots.length) state.bot = bots[0].username;
    select.value = state.bot;
  }

  function displayName(user) {
    return [user.first_name, user.last_name].filter(Boolean).join(" ");
  }

  async function loadUsers() {
    const { users } = await api("/users");
    const list = $("user-list");
    list.replaceChildren();
    for (const user of users) {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = `${displayName(user)} · ${user.language_code || "?"}`;
      button.setAttribute("aria-current", String(user.id === state.userId));
      button.addEventListener("click", () => selectUser(user.id));
      item.append(button);
      list.append(item);
    }
    return users;
  }

  async function selectUser(userId) {
    state.userId = userId;
    state.version = -1;
    state.seenAnswers.clear();
    updateUrl();
    const user = await api(`/users/${userId}${botQuery()}`);
    document.body.classList.add("chat-open");
    showNotice("");
    $("link-hint").hidden = true;
    $("chat-title").textContent = displayName(user);
    $("chat-subtitle").textContent = `id ${user.id}` + (user.username ? ` · @${user.username}` : "");
    showComposer();
    $("block-toggle").hidden = false;
    await loadUsers();
    startPolling();
  }

  // A deep link opens the chat with Telegram's "Start" button in place of the composer;
  // tapping it sends "/start <payload>", which the chat then shows as "/start".
  function showComposer() {
    const starting = Boolean(state.startPayload);
    $("start-bar").hidden = !starting;
    $("composer").hidden = starting;
  }

  async function tapStart() {
    const payload = state.startPayload;
    state.startPayload = null;
    showComposer();
    if (payload && state.userId) await sendAction(`/users/${state.userId}/start`, { payload });
  }

  function closeChat() {
    if (state.poll) state.poll.abort();
    state.userId = null;
    updateUrl();
    document.body.classList.remove("chat-open");
    loadUsers();
  }

  // --- rendering ---------------------------------------------------------------------

  function entityElement(entity, text) {
    let element;
    switch (entity.type) {
      case "bold": element = document.createElement("strong"); break;
      case "italic": element = document.createElement("em"); break;
      case "underline": element = document.createElement("u"); break;
      case "strikethrough": element = document.createElement("s"); break;
      case "code": element = document.createElement("code"); break;
      case "pre": element = document.createElement("pre"); break;
      case "blockquote":
      case "expandable_blockquote": element = document.createElement("blockquote"); break;
      case "spoiler":
        element = document.createElement("span");
        element.className = "spoiler";
        element.addEventListener("click", () => element.classList.add("revealed"));
        break;
      case "text_link":
      case "url": {
        const href = entity.type === "url" ? text : entity.url;
        if (!SAFE_LINK.test(href || "")) return document.createElement("span");
        element = document.createElement("a");
        element.href = href;
        element.target = "_blank";
        element.rel = "noopener noreferrer";
        break;
      }
      default: element = document.createElement("span");
    }
    return element;
  }

  // Rebuild formatted text from plain text + entities (offsets are UTF-16 units, which
  // is exactly how JavaScript indexes strings).
  function renderFormatted(container, text, entities) {
    const sorted = (entities || [])
      .map((e) => ({ ...e, end: e.offset + e.length }))
      .sort((a, b) => a.offset - b.offset || b.length - a.length);
    function build(parent, start, end, list) {
      let pos = start;
      let i = 0;
      while (i < list.length) {
        const entity = list[i];
        if (entity.offset < pos) { i += 1; continue; } // overlapping: ignore
        if (entity.offset > pos) parent.append(document.createTextNode(text.slice(pos, entity.offset)));
        const entityEnd = Math.min(entity.end, end);
        const element = entityElement(entity, text.slice(entity.offset, entity.end));
        const inner = [];
        let j = i + 1;
        while (j < list.length && list[j].offset < entityEnd) { inner.push(list[j]); j += 1; }
        build(element, entity.offset, entityEnd, inner);
        parent.append(element);
        pos = entityEnd;
        i = j;
      }
      if (pos < end) parent.append(document.createTextNode(text.slice(pos, end)));
    }
    build(container, 0, text.length, sorted);
  }

  function fileUrl(fileId) {
    return `${API}/files/${encodeURIComponent(fileId)}`;
  }

  function renderMedia(message) {
    const wrapper = document.createElement("div");
    if (message.photo) {
      const img = document.createElement("img");
      img.src = fileUrl(message.photo[message.photo.length - 1].file_id);
      img.alt = "photo";
      wrapper.append(img);
    } else if (message.sticker) {
      const sticker = document.createElement("div");
      sticker.className = "sticker";
      sticker.textContent = message.sticker.emoji || "🖼";
      wrapper.append(sticker);
    } else if (message.voice || message.audio) {
      const audio = document.createElement("audio");
      audio.controls = true;
      audio.src = fileUrl((message.voice || message.audio).file_id);
      wrapper.append(audio);
    } else if (message.document || message.video) {
      const file = message.document || message.video;
      const link = document.createElement("a");
      link.href = fileUrl(file.file_id);
      link.download = file.file_name || "file";
      link.textContent = `📄 ${file.file_name || "file"} (${file.file_size} bytes)`;
      wrapper.append(link);
    }
    return wrapper;
  }

  // Telegram shows a deep link's "/start <payload>" as plain "/start": the payload is for the bot.
  function shownAsTelegramDoes(text) {
    return /^\/start [A-Za-z0-9_-]{1,64}$/.test(text) ? "/start" : text;
  }

  function renderInlineKeyboard(message) {
    const rows = message.reply_markup && message.reply_markup.inline_keyboard;
    if (!rows) return null;
    const keyboard = document.createElement("div");
    keyboard.className = "keyboard";
    for (const row of rows) {
      const rowElement = document.createElement("div");
      rowElement.className = "row";
      for (const button of row) {
        let element;
        if (button.url !== undefined) {
          element = document.createElement("a");
          if (SAFE_LINK.test(button.url)) element.href = button.url;
          element.target = "_blank";
          element.rel = "noopener noreferrer";
        } else {
          element = document.createElement("button");
          element.type = "button";
          if (button.callback_data !== undefined) {
            element.addEventListener("click", () => sendAction(`/users/${state.userId}/callback`, {
              message_id: message.message_id,
              data: button.callback_data,
            }));
          } else {
            element.disabled = true;
          }
        }
        element.textContent = button.text;
        rowElement.append(element);
      }
      keyboard.append(rowElement);
    }
    return keyboard;
  }

  function renderMessage(message) {
    const item = document.createElement("li");
    item.className = `msg ${message.from_bot ? "bot" : "member"}`;
    if (message.deleted) {
      item.classList.add("deleted");
      item.textContent = "message deleted";
      return item;
    }
    if (message.media) item.append(renderMedia(message));
    const body = document.createElement("div");
    const text = message.plain_text ?? message.caption_plain;
    const entities = message.plain_text != null ? message.entities : message.caption_entities;
    if (text) {
      if (message.from_bot) renderFormatted(body, text, entities);
      else body.textContent = shownAsTelegramDoes(text); // a member's text is never interpreted
    }
    item.append(body);
    const keyboard = renderInlineKeyboard(message);
    if (keyboard) item.append(keyboard);
    const meta = document.createElement("div");
    meta.className = "meta";
    const time = new Date(message.date * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    meta.textContent = message.edit_date ? `edited · ${time}` : time;
    item.append(meta);
    return item;
  }

  function renderReplyKeyboard(messages) {
    const container = $("reply-keyboard");
    container.replaceChildren();
    const last = [...messages].reverse().find((m) => m.from_bot && m.reply_markup
      && (m.reply_markup.keyboard || m.reply_markup.remove_keyboard));
    const rows = last && last.reply_markup.keyboard;
    container.hidden = !rows;
    if (!rows) return;
    const keyboard = document.createElement("div");
    keyboard.className = "keyboard";
    for (const row of rows) {
      const rowElement = document.createElement("div");
      rowElement.className = "row";
      for (const button of row) {
        const text = typeof button === "string" ? button : button.text;
        const element = document.createElement("button");
        element.type = "button";
        element.textContent = text;
        element.addEventListener("click", () => sendAction(`/users/${state.userId}/messages`, { text }));
        rowElement.append(element);
      }
      keyboard.append(rowElement);
    }
    container.append(keyboard);
  }

  function render(data) {
    const list = $("messages");
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    list.replaceChildren(...data.messages.map(renderMessage));
    if (atBottom) list.scrollTop = list.scrollHeight;
    renderReplyKeyboard(data.messages);
    const toggle = $("block-toggle");
    toggle.textContent = data.blocked ? "Unblock bot" : "Block bot";
    toggle.dataset.blocked = String(data.blocked);
    $("composer").hidden = data.blocked || Boolean(state.startPayload);
    for (const answer of data.callback_answers) {
      if (state.seenAnswers.has(answer.callback_query_id)) continue;
      state.seenAnswers.add(answer.callback_query_id);
      if (answer.text && state.version >= 0) {
        if (answer.show_alert) window.alert(answer.text);
        else showNotice(answer.text);
      }
    }
  }

  // --- polling and actions -------------------------------------------------------------

  function startPolling() {
    if (state.poll) state.poll.abort();
    const controller = new AbortController();
    state.poll = controller;
    const userId = state.userId;
    (async () => {
      while (!controller.signal.aborted && userId === state.userId) {
        try {
          const path = `/chats/${userId}/messages?after_version=${state.version}&wait=25${botQuery("&")}`;
          const response = await fetch(API + path, { signal: controller.signal });
          const data = await response.json();
          if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
          if (data.version !== state.version) {
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

  async function sendAction(path, body) {
    try {
      showNotice("");
      await api(path + botQuery(), { method: "POST", body });
    } catch (error) {
      showNotice(error.message);
    }
  }

  function readAsBase64(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(file);
    });
  }

  function wireUp() {
    $("bot-select").addEventListener("change", (event) => {
      state.bot = event.target.value;
      updateUrl();
      if (state.userId) selectUser(state.userId);
    });

    $("new-user-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const form = event.target;
      const values = Object.fromEntries(new FormData(form));
      for (const key of ["last_name", "username"]) if (!values[key]) delete values[key];
      try {
        const user = await api("/users", { method: "POST", body: values });
        form.reset();
        await selectUser(user.id);
      } catch (error) {
        showNotice(error.message);
      }
    });

    $("composer").addEventListener("submit", async (event) => {
      event.preventDefault();
      const input = $("text-input");
      const text = input.value;
      if (!text.trim() || !state.userId) return;
      input.value = "";
      await sendAction(`/users/${state.userId}/messages`, { text });
    });

    $("file-input").addEventListener("change", async (event) => {
      const file = event.target.files[0];
      event.target.value = "";
      if (!file || !state.userId) return;
      const data_base64 = await readAsBase64(file);
      const caption = $("text-input").value || undefined;
      $("text-input").value = "";
      if (file.type.startsWith("image/") && file.type !== "image/svg+xml") {
        await sendAction(`/users/${state.userId}/photo`, { data_base64, caption });
      } else {
        await sendAction(`/users/${state.userId}/document`, {
          data_base64,
          caption,
          filename: file.name,
          mime_type: file.type || "application/octet-stream",
        });
      }
    });

    $("start-button").addEventListener("click", tapStart);
    $("back").addEventListener("click", closeChat);

    $("block-toggle").addEventListener("click", async (event) => {
      const blocked = event.target.dataset.blocked === "true";
      await sendAction(`/users/${state.userId}/${blocked ? "unblock" : "block"}`, {});
    });
  }

  async function main() {
    wireUp();
    try {
      await loadBots();
      const users = await loadUsers();
      if (state.userId && users.some((u) => u.id === state.userId)) {
        await selectUser(state.userId);
      } else if (state.startPayload) {
        state.userId = null;
        $("link-hint").hidden = false;
      }
    } catch (error) {
      showNotice(`The emulator is not reachable: ${error.message}`);
    }
  }

  main();
})();
