// stockcache dashboard: plain JavaScript over the JSON API, no build step, no third-party code.
//
// The access token lives in sessionStorage (this tab only, gone when it closes) and goes out as a
// bearer header: no cookie, so no cross-site request can act as the user. Everything the API
// returns is put on the page with textContent or SVG attributes, never parsed as HTML; links from
// the API (news, websites) are used only when they are http(s).
//
// Views: the overview (cards) and one symbol's detail view, chosen by the URL's hash
// (#/symbol/AAPL), so the browser's Back button and bookmarks work.
"use strict";

(() => {
  const TOKEN_KEY = "stockcache.token";
  const REFRESH_MS = 30000;
  const KPI_DAYS = 14;
  const HISTORY_DAYS = [30, 100];
  const NEWS_DAYS = 7;
  const NEWS_SHOWN = 10;
  const SVG_NS = "http://www.w3.org/2000/svg";
  const STALE_HINT = "Served past its TTL: the upstream failed or today's budget is spent.";
  const SYMBOL_RE = /^[A-Za-z0-9.\-^=:_]{1,20}$/; // the contract's symbol alphabet
  const DETAIL_HASH = /^#\/symbol\/([^/?#]+)$/;
  // The currencies the ECB publishes reference rates for, and EUR itself: the base currencies the
  // service can convert to. The API does not list them; the user's own base joins them if it is not one.
  // (Bulgaria adopted the euro on 2026-01-01, and the ECB stopped publishing BGN.)
  const ECB_CURRENCIES = ["AUD", "BRL", "CAD", "CHF", "CNY", "CZK", "DKK", "EUR", "GBP", "HKD", "HUF", "IDR",
    "ILS", "INR", "ISK", "JPY", "KRW", "MXN", "MYR", "NOK", "NZD", "PHP", "PLN", "RON", "SEK", "SGD", "THB",
    "TRY", "USD", "ZAR"];

  const state = {
    token: null, me: null, timer: null, generation: 0, refreshing: null, refreshes: 0,
    stats: null, kpiRows: null, detail: null, detailSeq: 0, historyDays: HISTORY_DAYS[0],
    openedByLink: false, overviewScroll: 0, portfolioSeq: 0, baseChanging: false,
  };
  const $ = (id) => document.getElementById(id);

  // -- formatting -----------------------------------------------------------------------------
  const fmt2 = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  const fmt1 = new Intl.NumberFormat("en-US", { minimumFractionDigits: 1, maximumFractionDigits: 1 });
  const fmtInt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  const fmtCost = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 4 });
  const fmtShares = new Intl.NumberFormat("en-US", { maximumFractionDigits: 4 });
  const fmtCompact = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 2 });
  const fmtDay = new Intl.DateTimeFormat("en-US", { month: "short", day: "numeric", timeZone: "UTC" });
  const isNum = (v) => typeof v === "number" && Number.isFinite(v);
  const DASH = "\u2014";

  const money = (v) => (isNum(v) ? fmt2.format(v) : DASH);
  const int = (v) => (isNum(v) ? fmtInt.format(v) : DASH);
  const shares = (v) => (isNum(v) ? fmtShares.format(v) : DASH);
  const compact = (v) => (isNum(v) ? fmtCompact.format(v) : DASH);
  const text = (v) => (v === null || v === undefined || v === "" ? DASH : String(v));
  function signed(v) {
    if (!isNum(v)) return DASH;
    const t = fmt2.format(Math.abs(v));
    if (t === "0.00") return t;
    return (v > 0 ? "+" : "-") + t;
  }
  const signedPct = (v) => (isNum(v) ? signed(v) + "%" : DASH);

  // -- amounts in a currency: as many decimals as the currency has (JPY none, most two) ---------------
  // The API gives every amount in the major unit with its ISO 4217 code, null when no source knows it
  // (and for indices, which are in points). A number is never shown without its unit or that word.
  const formats = new Map();
  function numberFormat(min, max) {
    const key = min + ":" + max;
    if (!formats.has(key)) {
      formats.set(key, new Intl.NumberFormat("en-US", { minimumFractionDigits: min, maximumFractionDigits: max }));
    }
    return formats.get(key);
  }
  const digitsByCode = new Map();
  function currencyDigits(code) {
    if (typeof code !== "string") return 2;
    if (!digitsByCode.has(code)) {
      let digits = 2;
      try {
        digits = new Intl.NumberFormat("en-US", { style: "currency", currency: code }).resolvedOptions()
          .maximumFractionDigits;
      } catch (exc) { digits = 2; } // not a code the browser knows: two, as most currencies have
      digitsByCode.set(code, digits);
    }
    return digitsByCode.get(code);
  }
  // A total (value, gain, cost) has the currency's decimals; a per-share figure below one unit keeps up
  // to four, so a London share at 0.8252 GBP is not cut to 0.83.
  const amountText = (v, code) => numberFormat(currencyDigits(code), currencyDigits(code)).format(v);
  function unitText(v, code) {
    const digits = currencyDigits(code);
    return numberFormat(digits, Math.abs(v) < 1 ? Math.max(digits, 4) : digits).format(v);
  }
  function signedWith(v, format) {
    const t = format(Math.abs(v));
    if (Number(t.replace(/,/g, "")) === 0) return t;
    return (v > 0 ? "+" : "-") + t;
  }
  const isIndex = (symbol) => String(symbol).startsWith("^");
  // What a figure is counted in: its currency, "points" for an index, else the fact that nobody knows.
  const unitOf = (code, symbol) => (typeof code === "string" && code ? code
    : isIndex(symbol) ? "points" : "currency unknown");
  // A known unit goes beside the number ("0.8252 GBP"); "currency unknown" goes under it, so the
  // table keeps its width.
  function withUnit(t, code, symbol) {
    const unit = unitOf(code, symbol);
    if (unit !== "currency unknown") return t + " " + unit;
    const both = document.createDocumentFragment();
    both.append(t, " ", el("span", { cls: "unit-unknown", text: unit }));
    return both;
  }
  const amount = (v, code, symbol) => (isNum(v) ? withUnit(amountText(v, code), code, symbol) : DASH);
  const unitPrice = (v, code, symbol) => (isNum(v) ? withUnit(unitText(v, code), code, symbol) : DASH);
  const bareUnit = (v, code) => (isNum(v) ? unitText(v, code) : DASH);
  const signedBare = (v, code) => (isNum(v) ? signedWith(v, (x) => amountText(x, code)) : DASH);
  const signedUnit = (v, code) => (isNum(v) ? signedWith(v, (x) => unitText(x, code)) : DASH);
  const rate = (v) => (isNum(v) ? fmt1.format(v * 100) + "%" : DASH); // hit rates are fractions 0..1
  const ms = (v) => (isNum(v) ? fmt1.format(v) + " ms" : DASH);
  const trend = (v) => (!isNum(v) || v === 0 ? "" : v > 0 ? "up" : "down");

  function bytes(n) {
    if (!isNum(n)) return DASH;
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return (i === 0 ? fmtInt.format(n) : fmt1.format(n)) + " " + units[i];
  }

  function duration(seconds) {
    if (!isNum(seconds)) return DASH;
    const s = Math.max(0, Math.floor(seconds));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min";
    if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
    return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
  }

  // Times are shown in UTC, like the KPI days, so every figure on the page uses one clock.
  function utcTime(value) {
    const date = isNum(value) ? new Date(value * 1000) : new Date(String(value));
    return Number.isFinite(date.getTime()) ? date.toISOString().slice(0, 16).replace("T", " ") + " UTC" : DASH;
  }
  const utcToday = () => new Date().toISOString().slice(0, 10);
  // The window a per-day figure covers: "today, UTC", or the day itself when the newest row is older.
  const dayWindow = (date) => (String(date) === utcToday() ? "today, UTC" : String(date) + " (UTC)");

  function safeUrl(value) {
    try {
      const url = new URL(String(value));
      return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
    } catch (exc) {
      return null;
    }
  }

  // -- DOM helpers: text only, never HTML -------------------------------------------------------
  function el(tag, opts, ...children) {
    const node = document.createElement(tag);
    const o = opts || {};
    if (o.cls) node.className = o.cls;
    if (o.text !== undefined && o.text !== null) node.textContent = String(o.text);
    if (o.title) node.title = String(o.title);
    if (o.data) for (const [k, v] of Object.entries(o.data)) node.dataset[k] = String(v);
    if (o.attrs) for (const [k, v] of Object.entries(o.attrs)) node.setAttribute(k, String(v));
    for (const child of children) if (child) node.append(child);
    return node;
  }

  function svg(tag, attrs, content) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (content !== undefined) node.textContent = String(content);
    return node;
  }

  const td = (content, field, cls) => (content instanceof Node
    ? el("td", { cls, data: field ? { field } : undefined }, content)
    : el("td", { text: content, cls, data: field ? { field } : undefined }));
  const numTd = (content, field, extra) => td(content, field, "num" + (extra ? " " + extra : ""));
  const tag = (kind, content, title) => el("span", { cls: "tag " + kind, text: content, title });
  const noteTd = (content, colspan) => el("td", { cls: "note muted", text: content, attrs: { colspan },
    data: { field: "error" } });

  function figure(field, label, value, cls) {
    return el("div", { cls: "figure", data: { field } },
      el("span", { cls: "label", text: label }),
      el("span", { cls: "value" + (cls ? " " + cls : ""), text: value }));
  }

  function pairs(list, rows) {
    list.replaceChildren(...rows.map(([field, label, value]) => [
      el("dt", { text: label }), value instanceof Node ? el("dd", { data: { field } }, value)
        : el("dd", { text: value, data: { field } })]).flat());
  }

  // The key cell of a symbol's row: a link to its detail view; stale/demo/error tags go after it.
  function symbolTd(symbol) {
    const link = el("a", { cls: "symbol-link", text: symbol,
      attrs: { href: "#/symbol/" + encodeURIComponent(symbol), title: "Open " + symbol } });
    return el("td", { cls: "lead", data: { field: "symbol" } }, link);
  }

  // Rows go in with each cell labelled by its column's header: stacked rows (narrow screens) show
  // that label above the figure, so no column has to be dropped to fit.
  function fill(tbody, rows) {
    const head = tbody.parentElement.tHead;
    const labels = head ? [...head.rows[0].cells].map((th) => th.textContent.trim()) : [];
    for (const tr of rows) {
      let column = 0;
      for (const cell of tr.cells) {
        if (!("label" in cell.dataset)) cell.dataset.label = cell.colSpan > 1 ? "" : labels[column] || "";
        column += cell.colSpan;
      }
    }
    tbody.replaceChildren(...rows);
  }

  function marks(container, item) {
    const found = [];
    if (item && item.stale) found.push(tag("stale", "stale", STALE_HINT));
    if (item && item.source === "demo") found.push(tag("demo", "demo", "Offline demo data, not real prices."));
    container.replaceChildren(...found);
    return found.length;
  }

  // -- the API ------------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(path, { method = "GET", body, auth = true } = {}) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (auth && state.token) headers.Authorization = "Bearer " + state.token;
    let response;
    try {
      response = await fetch(path, {
        method, headers, cache: "no-store", credentials: "omit",
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (exc) {
      throw new ApiError(0, "network", "The service did not answer. Is it running?");
    }
    if (response.status === 204) return null;
    let data = null;
    try { data = await response.json(); } catch (exc) { data = null; }
    if (!response.ok) {
      const err = data && data.error ? data.error : {};
      if (response.status === 401 && auth) sessionEnded();
      throw new ApiError(response.status, err.code || "http_" + response.status,
        err.message || "The service answered HTTP " + response.status + ".");
    }
    return data;
  }

  // -- session ------------------------------------------------------------------------------------
  function setToken(token) {
    state.token = token;
    try {
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch (exc) { /* storage disabled: the token stays in memory for this page only */ }
  }

  function showLogin(message) {
    $("dashboard").hidden = true;
    $("whoami").hidden = true;
    $("logout").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("login-username").focus();
  }

  function stop() {
    state.generation += 1;
    clearTimeout(state.timer);
    state.timer = null;
    state.me = null;
    state.stats = null;
    state.kpiRows = null;
    closeDetail({ restore: false });
    for (const tbody of document.querySelectorAll("#dashboard tbody")) tbody.replaceChildren();
    for (const box of document.querySelectorAll("#overview .figures, #kpi-chart, #portfolio-fx")) box.replaceChildren();
    totalsNote({}, []);
    $("base-error").textContent = "";
  }

  // The login page keeps the status badge and the demo banner (loadHealth needs no token).
  function sessionEnded() {
    if (!state.token) return;
    setToken(null);
    stop();
    showLogin("Your session has ended. Log in again.");
  }

  function logout() {
    setToken(null);
    stop();
    showLogin("");
  }

  async function onLogin(event) {
    event.preventDefault();
    const button = event.target.querySelector("button");
    button.disabled = true;
    $("login-error").textContent = "";
    try {
      const answer = await api("/api/auth/login", {
        method: "POST", auth: false,
        body: { username: $("login-username").value.trim(), password: $("login-password").value },
      });
      $("login-password").value = "";
      setToken(answer.access_token);
      await start();
    } catch (exc) {
      $("login-error").textContent = exc.message;
    } finally {
      button.disabled = false;
    }
  }

  async function start() {
    let me;
    try {
      me = await api("/api/me");
    } catch (exc) {
      if (exc.status !== 401) showLogin(exc.message);
      return;
    }
    state.me = me;
    showBase(me.base_currency);
    $("whoami").textContent = me.username + (me.is_admin ? " (admin)" : "");
    $("whoami").hidden = false;
    $("logout").hidden = false;
    // Admin panels are hidden, and their endpoints never called, for everyone else.
    for (const panel of document.querySelectorAll(".admin-only")) panel.hidden = !me.is_admin;
    $("login").hidden = true;
    $("dashboard").hidden = false;
    route({ byLink: false, load: false }); // the refresh below loads an open detail view
    await refresh();
  }

  // -- refreshing -------------------------------------------------------------------------------------
  function refresh() {
    if (state.refreshing) return state.refreshing;
    clearTimeout(state.timer);
    const generation = state.generation;
    const jobs = [loadHealth(), loadPortfolio(), loadWatchlist()];
    if (state.me && state.me.is_admin) jobs.push(loadStats(), loadKpis());
    if (state.detail) jobs.push(loadDetail());
    state.refreshing = Promise.allSettled(jobs).then(() => {
      state.refreshing = null;
      if (generation !== state.generation || !state.me) return;
      const now = new Date();
      $("updated-at").textContent = now.toLocaleTimeString();
      $("updated-at").setAttribute("datetime", now.toISOString());
      state.refreshes += 1;
      document.body.dataset.refreshes = String(state.refreshes);
      state.timer = setTimeout(refresh, REFRESH_MS);
    });
    return state.refreshing;
  }

  // Each panel loads on its own: one failing endpoint leaves the others on screen.
  async function guarded(statusId, load) {
    try {
      await load();
      $(statusId).textContent = "";
    } catch (exc) {
      if (exc.status !== 401) $(statusId).textContent = "Could not load: " + exc.message;
    }
  }

  // -- health -------------------------------------------------------------------------------------------
  async function loadHealth() {
    const badge = $("health-badge");
    let health;
    try {
      health = await api("/healthz", { auth: false });
    } catch (exc) {
      badge.textContent = "unreachable";
      badge.className = "badge down";
      badge.hidden = false;
      return;
    }
    const status = String(health.status || "unknown");
    badge.textContent = status;
    badge.className = "badge " + (status === "ok" ? "ok" : "degraded");
    badge.hidden = false;
    const demo = health.source === "demo";
    $("demo-banner").hidden = !demo;
    $("health-figures").replaceChildren(
      figure("status", "Status", status, status === "ok" ? "up" : "down"),
      figure("source", "Source", demo ? "demo (offline, not real prices)" : text(health.source)),
      figure("demo", "Demo data", demo ? "yes" : "no"),
      figure("version", "Version", text(health.version)),
      figure("uptime", "Up for", duration(health.uptime)));
    const reasons = Array.isArray(health.reasons) ? health.reasons : [];
    $("health-reasons").replaceChildren(...reasons.map((r) => el("li", { text: r })));
  }

  // -- portfolio -----------------------------------------------------------------------------------------
  function removeButton(label, action) {
    const button = el("button", { cls: "remove", text: "Remove", attrs: { type: "button", "aria-label": label } });
    button.addEventListener("click", async () => {
      button.disabled = true;
      try { await action(); } catch (exc) { button.disabled = false; button.title = exc.message; }
    });
    return button;
  }

  // Row actions share one cell (issue 16 adds "Analysis" beside "Remove").
  const actionsTd = (...buttons) => el("td", { cls: "actions" }, ...buttons);

  // A position left out of the totals gets a row under its own that says why, in the API's words.
  function reasonRow(symbol, message, columns) {
    return el("tr", { cls: "reason", data: { reasonFor: symbol } },
      el("td", { cls: "note", text: message, attrs: { colspan: columns }, data: { field: "reason" } }));
  }

  function positionRows(perf, base) {
    const errors = perf.errors || {};
    const columns = $("portfolio-table").tHead.rows[0].cells.length;
    const rows = [];
    const leftOut = [];
    for (const p of perf.positions || []) {
      const code = p.currency;
      const err = errors[p.symbol];
      const symbolCell = symbolTd(p.symbol);
      const tr = el("tr", { data: { symbol: p.symbol, id: p.id } });
      tr.append(symbolCell, numTd(shares(p.shares), "shares"), numTd(bareUnit(p.cost_basis, code), "cost_basis"));
      const quoted = p.price !== null && p.price !== undefined;
      if (!quoted) {
        symbolCell.append(tag("err", "no quote"));
        tr.append(noteTd(err ? err.message : "No quote right now.", 6));
      } else {
        if (p.stale) {
          tr.classList.add("stale");
          symbolCell.append(tag("stale", "stale", STALE_HINT));
        }
        tr.append(
          numTd(unitPrice(p.price, code, p.symbol), "price"), numTd(amount(p.value, code, p.symbol), "value"),
          numTd(amount(p.value_base, base), "value_base"),
          numTd(signedBare(p.gain, code), "gain", trend(p.gain)),
          numTd(signedPct(p.gain_percent), "gain_percent", trend(p.gain)),
          numTd(signedBare(p.day_change, code), "day_change", trend(p.day_change)));
      }
      tr.append(actionsTd(removeButton("Remove position " + p.symbol, async () => {
        await api("/api/portfolio/" + encodeURIComponent(p.id), { method: "DELETE" });
        await loadPortfolio();
      })));
      rows.push(tr);
      if (!quoted || !isNum(p.value_base) || err) leftOut.push(p.symbol);
      if (quoted && (!isNum(p.value_base) || err)) {
        symbolCell.append(tag("err", "not in totals", err ? err.message : undefined));
        tr.classList.add("has-reason");
        rows.push(reasonRow(p.symbol, err ? err.message : p.symbol + " is left out of the totals.", columns));
      }
    }
    return { rows, leftOut: [...new Set(leftOut)] };
  }

  function totalsNote(totals, leftOut) {
    const note = $("portfolio-incomplete");
    if (totals.complete !== false) {
      note.replaceChildren();
      note.hidden = true;
      return;
    }
    const names = leftOut.length > 1 ? leftOut.slice(0, -1).join(", ") + " and " + leftOut[leftOut.length - 1]
      : leftOut[0];
    note.replaceChildren(tag("err", "incomplete"),
      names ? " These totals leave out " + names + " (see " + (leftOut.length > 1 ? "their rows" : "its row") + ")."
        : " Some positions are left out of these totals.");
    note.hidden = false;
  }

  // The rates the base-currency figures were converted at: "ECB rates of 2026-11-27", stale if past their TTL.
  function fxNote(fx) {
    const box = $("portfolio-fx");
    if (fx && fx.date) {
      const source = fx.source === "ecb" ? "ECB" : text(fx.source);
      box.replaceChildren(el("span", { text: source + " rates of " + String(fx.date), data: { field: "fx-date" } }));
      if (fx.stale) box.append(tag("stale", "stale", "These rates are past their TTL: they could not be refreshed."));
    } else {
      box.replaceChildren("No exchange rates could be had just now.");
    }
  }

  function renderPortfolio(perf) {
    const t = perf.totals || {};
    const base = typeof t.currency === "string" ? t.currency : null;
    showBase(base);
    $("value-base-head").textContent = base ? "Value (" + base + ")" : "Value (base)";
    const { rows, leftOut } = positionRows(perf, base);
    fill($("portfolio-table").tBodies[0], rows);
    const any = rows.length > 0;
    $("portfolio-empty").hidden = any;
    // Totals are in the base currency, always named (a server without one gets bare numbers).
    const total = (v, sign) => (!isNum(v) ? DASH
      : (sign ? signedBare(v, base) : amountText(v, base)) + (base ? " " + base : ""));
    $("portfolio-totals").replaceChildren(...(any ? [
      figure("total-value", "Value", total(t.value)),
      figure("total-gain", "Gain",
        total(t.gain, true) + (isNum(t.gain_percent) ? " (" + signedPct(t.gain_percent) + ")" : ""), trend(t.gain)),
      figure("total-day", "Day change", total(t.day_change, true), trend(t.day_change)),
      figure("total-cost", "Cost", total(t.cost)),
    ] : []));
    totalsNote(any ? t : {}, leftOut);
    if (any) fxNote(perf.fx);
    else $("portfolio-fx").replaceChildren();
  }

  // Only the newest answer is drawn: one asked before the base currency changed must not overwrite it.
  function loadPortfolio() {
    state.portfolioSeq += 1;
    const seq = state.portfolioSeq;
    return guarded("portfolio-status", async () => {
      const perf = await api("/api/portfolio/performance");
      if (seq !== state.portfolioSeq || state.baseChanging || !state.me) return;
      renderPortfolio(perf);
    });
  }

  // -- the base currency: the user's own (GET/PUT /api/me), so the choice follows them to any browser --
  function showBase(code) {
    if (typeof code !== "string" || !code) return;
    const select = $("base-currency");
    const codes = [...new Set([...ECB_CURRENCIES, code])].sort();
    if (select.dataset.codes !== codes.join(",")) {
      select.replaceChildren(...codes.map((c) => el("option", { text: c, attrs: { value: c } })));
      select.dataset.codes = codes.join(",");
    }
    select.value = code;
  }

  async function changeBase() {
    const select = $("base-currency");
    const me = state.me;
    const code = select.value;
    if (!me || code === me.base_currency) return;
    const generation = state.generation;
    select.disabled = true;
    state.baseChanging = true; // answers still on their way are in the old currency: drop them
    $("base-error").textContent = "";
    try {
      const answer = await api("/api/me", { method: "PUT", body: { base_currency: code } });
      me.base_currency = answer.base_currency;
    } catch (exc) {
      if (generation === state.generation && exc.status !== 401) $("base-error").textContent = exc.message;
    } finally {
      state.baseChanging = false;
      select.disabled = false;
    }
    if (generation !== state.generation) return;
    showBase(me.base_currency);
    await loadPortfolio();
  }

  // -- watchlist -----------------------------------------------------------------------------------------
  function loadWatchlist() {
    return guarded("watchlist-status", async () => {
      const answer = await api("/api/watchlist");
      const errors = answer.errors || {};
      const rows = (answer.items || []).map((item) => {
        const q = item.quote;
        const symbolCell = symbolTd(item.symbol);
        const tr = el("tr", { data: { symbol: item.symbol } });
        tr.append(symbolCell);
        if (!q) {
          const err = errors[item.symbol];
          symbolCell.append(tag("err", "no quote"));
          tr.append(noteTd(err ? err.message : "No quote right now.", 5));
        } else {
          if (q.source === "demo") symbolCell.append(tag("demo", "demo", "Offline demo data, not real prices."));
          if (q.stale) {
            tr.classList.add("stale");
            symbolCell.append(tag("stale", "stale", STALE_HINT));
          }
          tr.append(
            numTd(unitPrice(q.price, q.currency, item.symbol), "price"),
            numTd(signedUnit(q.change, q.currency), "change", trend(q.change)),
            numTd(signedPct(q.change_percent), "change_percent", trend(q.change)),
            td(q.source, "source"), td(duration(q.age), "age"));
        }
        tr.append(actionsTd(removeButton("Remove " + item.symbol + " from the watchlist", async () => {
          await api("/api/watchlist/" + encodeURIComponent(item.symbol), { method: "DELETE" });
          await loadWatchlist();
        })));
        return tr;
      });
      fill($("watchlist-table").tBodies[0], rows);
      $("watchlist-empty").hidden = rows.length > 0;
    });
  }

  // -- forms ------------------------------------------------------------------------------------------------
  // Numbers typed by a person go out as numbers; anything else goes out as typed, so the API's own
  // validation message (the one every client sees) is what appears under the form.
  function asNumber(value) {
    const trimmed = value.trim();
    return trimmed !== "" && Number.isFinite(Number(trimmed)) ? Number(trimmed) : trimmed;
  }

  function submitter(formId, errorId, send, after) {
    $(formId).addEventListener("submit", async (event) => {
      event.preventDefault();
      const form = event.target;
      const button = form.querySelector("button[type=submit]");
      button.disabled = true;
      $(errorId).textContent = "";
      try {
        await send();
        form.reset();
        await after();
      } catch (exc) {
        $(errorId).textContent = exc.message;
      } finally {
        button.disabled = false;
      }
    });
  }

  // -- admin: cache and upstream --------------------------------------------------------------------------
  function budgetCell(left) {
    const cell = el("td", { data: { field: "budget_left" } });
    const windows = [["day", "today"], ["minute", "this minute"], ["second", "this second"]];
    const parts = left && typeof left === "object"
      ? windows.filter(([w]) => isNum(left[w])).map(([w, label]) => el("span",
        { cls: "budget", data: { window: w }, text: int(left[w]) + " " + label }))
      : isNum(left) ? [el("span", { cls: "budget", data: { window: "day" }, text: int(left) + " today" })] : [];
    if (!parts.length) cell.textContent = "no limit";
    parts.forEach((part, i) => { if (i) cell.append(", "); cell.append(part); });
    return cell;
  }

  function tierRow(name, tier, other) {
    const key = el("td", { cls: "lead", text: name, data: { field: "tier" } });
    if (!tier) return el("tr", { data: { tier: name } }, key, noteTd("not configured", 4));
    const size = isNum(tier.max_size) ? int(tier.size) + " / " + int(tier.max_size) : int(tier.size);
    return el("tr", { data: { tier: name } }, key, numTd(size, "size"), numTd(int(tier.hits), "hits"),
      numTd(int(tier.misses), "misses"), numTd(other, "other"));
  }

  // Request reads (what the KPI days count), falling back to the cache's own counters on servers
  // without them, so "since start" and "today" differ only in their window.
  const reads = (s) => (s.reads && typeof s.reads === "object" ? s.reads : s);

  // The Cache card shows the hit rate over two windows, each named: since this process started
  // (/api/cache/stats) and today, UTC (the newest /api/kpis row). Either answer may come first.
  function renderCacheFigures() {
    const s = state.stats;
    if (!s) return;
    const failing = Array.isArray(s.failing_tiers) ? s.failing_tiers : [];
    const latest = state.kpiRows && state.kpiRows.length ? state.kpiRows[0] : null;
    $("cache-figures").replaceChildren(...[
      figure("hit-rate", "Hit rate \u00b7 since start", rate(reads(s).hit_rate)),
      latest ? figure("hit-rate-today", "Hit rate \u00b7 " + dayWindow(latest.date), rate(latest.hit_rate)) : null,
      figure("memory-items", "Items in memory", int(s.memory && s.memory.size)),
      figure("coalesced", "Coalesced \u00b7 since start", int(s.coalesced)),
      figure("stale-served", "Stale served \u00b7 since start", int(s.stale_served)),
      failing.length ? figure("failing-tiers", "Failing tiers", failing.join(", "), "down") : null,
    ].filter(Boolean));
  }

  function loadStats() {
    return guarded("cache-status", async () => {
      const s = await api("/api/cache/stats");
      state.stats = s;
      renderCacheFigures();
      const mem = s.memory || {};
      fill($("cache-tiers").tBodies[0], [
        tierRow("memory", s.memory, isNum(mem.evictions) ? int(mem.evictions) + " evicted" : DASH),
        tierRow("sqlite", s.sqlite, s.sqlite ? bytes(s.sqlite.file_bytes) + " on disk" : DASH),
        tierRow("redis", s.redis, DASH),
      ]);
      const kinds = Object.entries(reads(s).by_kind || s.by_kind || {}).sort(([a], [b]) => a.localeCompare(b));
      fill($("cache-kinds").tBodies[0], kinds.map(([kind, k]) => el("tr", { data: { kind } },
        el("td", { cls: "lead", text: kind, data: { field: "kind" } }), numTd(int(k.hits), "hits"),
        numTd(int(k.misses), "misses"), numTd(rate(k.hit_rate), "hit_rate"))));
      const providers = Object.entries(s.upstream || {}).sort(([a], [b]) => a.localeCompare(b));
      fill($("upstream-table").tBodies[0], providers.map(([name, u]) => el("tr", { data: { provider: name } },
        el("td", { cls: "lead", text: name, data: { field: "provider" } }),
        numTd(int(isNum(u.calls_today) ? u.calls_today : u.calls), "calls_today"),
        budgetCell(u.budget_left), numTd(int(u.errors), "errors"), numTd(int(u.rate_limited), "rate_limited"),
        td(u.circuit || DASH, "circuit"))));
    });
  }

  // -- admin: KPI history ------------------------------------------------------------------------------------
  const callsOf = (row) => Object.values(row.upstream_calls || {}).reduce((a, n) => a + (isNum(n) ? n : 0), 0);
  const sum = (rows, f) => rows.reduce((a, r) => a + (isNum(f(r)) ? f(r) : 0), 0);

  function showKpiEmpty() {
    state.kpiRows = [];
    renderCacheFigures();
    $("kpi-empty").hidden = false;
    $("kpi-body").hidden = true;
    $("kpi-chart").replaceChildren();
  }

  // The latency figures shown are market data's (issue 17): logins hash a password for 0.15-0.9 s
  // and would dominate percentiles over every route. A server without route groups gives its overall figures.
  function dataLatency(row) {
    const groups = row && row.latency;
    return (groups && groups.market_data) || row;
  }

  function loadKpis() {
    return guarded("kpi-status", async () => {
      let answer;
      try {
        answer = await api("/api/kpis?days=" + KPI_DAYS);
      } catch (exc) {
        if (exc.status === 404) { showKpiEmpty(); return; } // no KPI endpoint (yet) on this server
        throw exc;
      }
      const rows = Array.isArray(answer && answer.days) ? answer.days : [];
      if (!rows.length) { showKpiEmpty(); return; }
      state.kpiRows = rows;
      renderCacheFigures();
      const latest = rows[0]; // newest first
      const latestData = dataLatency(latest);
      const day = dayWindow(latest.date);
      const span = KPI_DAYS + " days";
      $("kpi-figures").replaceChildren(
        figure("calls-saved", "Calls saved \u00b7 " + span, int(sum(rows, (r) => r.calls_saved))),
        figure("calls-saved-today", "Calls saved \u00b7 " + day, int(latest.calls_saved)),
        figure("requests", "Requests \u00b7 " + span, int(sum(rows, (r) => r.requests))),
        figure("cost", "Est. cost \u00b7 " + span, fmtCost.format(sum(rows, (r) => r.estimated_cost))),
        figure("hit-rate-day", "Hit rate \u00b7 " + day, rate(latest.hit_rate)),
        figure("p50", "Data p50 \u00b7 " + day, ms(latestData.p50_ms)),
        figure("p95", "Data p95 \u00b7 " + day, ms(latestData.p95_ms)),
        figure("p99", "Data p99 \u00b7 " + day, ms(latestData.p99_ms)));
      fill($("kpi-table").tBodies[0], rows.map((r) => {
        const data = dataLatency(r);
        return el("tr", { data: { date: r.date } },
          el("td", { cls: "lead", text: r.date, data: { field: "date" } }),
          numTd(int(r.requests), "requests"), numTd(rate(r.hit_rate), "hit_rate"),
          numTd(int(callsOf(r)), "upstream_calls"), numTd(int(r.calls_saved), "calls_saved"),
          numTd(isNum(data.p50_ms) ? fmt1.format(data.p50_ms) : DASH, "p50_ms"),
          numTd(isNum(data.p95_ms) ? fmt1.format(data.p95_ms) : DASH, "p95_ms"),
          numTd(isNum(data.p99_ms) ? fmt1.format(data.p99_ms) : DASH, "p99_ms"));
      }));
      $("kpi-empty").hidden = true;
      $("kpi-body").hidden = false;
      drawKpiChart(true);
    });
  }

  // -- charts: hand-drawn SVG, sized to the pixels of their box so labels are never scaled or cut -----
  const CHAR_PX = 7; // a generous width of one 11 px chart label character, for margins

  // Draw ``make(width)`` into ``box`` when it is on screen; skip when its width has not changed.
  function draw(box, make, force) {
    const width = Math.floor(box.clientWidth);
    if (!width) return;
    if (!force && box.dataset.drawnWidth === String(width)) return;
    box.dataset.drawnWidth = String(width);
    box.replaceChildren(make(width));
  }

  function drawKpiChart(force) {
    if (state.kpiRows && state.kpiRows.length) draw($("kpi-chart"), (w) => kpiChart(state.kpiRows, w), force);
  }

  // The calls axis has four gridlines, so its top is a round number that splits into quarters.
  function niceCeiling(n) {
    if (n <= 4) return 4;
    const step = Math.pow(10, Math.floor(Math.log10(n)));
    for (const m of [1, 2, 4, 8, 10]) if (m * step >= n) return m * step;
    return 10 * step;
  }

  // One slot per calendar day of the window, ending on the newest row's day: the API lists only days
  // with activity, and a quiet day should read as a gap, not vanish from the time axis.
  function daySlots(rows) {
    const newest = Date.parse(String(rows[0].date) + "T00:00:00Z");
    if (!Number.isFinite(newest)) return rows.slice().reverse().map((r) => [String(r.date), r]);
    const byDate = new Map(rows.map((r) => [String(r.date), r]));
    const slots = [];
    for (let i = KPI_DAYS - 1; i >= 0; i -= 1) {
      const day = new Date(newest - i * 86400000).toISOString().slice(0, 10);
      slots.push([day, byDate.get(day)]);
    }
    return slots;
  }

  // Bars: upstream calls per day (left axis). Line: cache hit rate (right axis, 0-100 %). Oldest left.
  function kpiChart(rows, W) {
    const slots = daySlots(rows);
    const top = niceCeiling(Math.max(0, ...rows.map(callsOf)));
    const tickText = (i) => { const t = (top * i) / 4; return (Number.isInteger(t) ? fmtInt : fmt1).format(t); };
    const H = W < 480 ? 190 : 230, T = 12, B = 26;
    const L = 10 + CHAR_PX * tickText(4).length, R = 10 + CHAR_PX * 4;
    const plotW = W - L - R, plotH = H - T - B;
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img",
      "aria-labelledby": "kpi-chart-title" });
    root.append(svg("title", { id: "kpi-chart-title" },
      "Upstream calls (bars) and cache hit rate (line) per day, oldest on the left"));
    for (let i = 0; i <= 4; i += 1) {
      const y = T + plotH - (plotH * i) / 4;
      root.append(svg("line", { class: "grid-line", x1: L, x2: W - R, y1: y, y2: y }));
      root.append(svg("text", { x: L - 6, y: y + 4, "text-anchor": "end" }, tickText(i)));
      root.append(svg("text", { x: W - R + 6, y: y + 4, "text-anchor": "start" }, (25 * i) + "%"));
    }
    root.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: T + plotH, y2: T + plotH }));
    const slot = plotW / Math.max(1, slots.length);
    const labelEvery = Math.max(1, Math.ceil(slots.length / Math.max(1, Math.floor(plotW / (CHAR_PX * 5 + 10)))));
    const points = [];
    slots.forEach(([day, d], i) => {
      const x = L + slot * i;
      if ((slots.length - 1 - i) % labelEvery === 0) {
        root.append(svg("text", { x: x + slot / 2, y: H - 8, "text-anchor": "middle" }, day.slice(5)));
      }
      if (!d) return;
      const calls = callsOf(d);
      const h = top ? (plotH * calls) / top : 0;
      const bar = svg("rect", { class: "bar-calls", x: x + slot * 0.15, y: T + plotH - h, width: slot * 0.7,
        height: h, "data-date": day, "data-calls": calls });
      bar.append(svg("title", {}, `${day}: ${calls} upstream calls`));
      root.append(bar);
      if (isNum(d.hit_rate)) {
        const hr = Math.min(1, Math.max(0, d.hit_rate));
        points.push([x + slot / 2, T + plotH - plotH * hr, day, d]);
      }
    });
    if (points.length) {
      root.append(svg("polyline", { class: "line-hit", points: points.map(([x, y]) => `${x},${y}`).join(" ") }));
      for (const [x, y, day, d] of points) {
        const dot = svg("circle", { class: "dot-hit", cx: x, cy: y, r: 3.5, "data-date": day });
        dot.append(svg("title", {}, `${day}: hit rate ${rate(d.hit_rate)}`));
        root.append(dot);
      }
    }
    return root;
  }

  // A round step for about ``count`` gridlines over ``span``.
  function niceStep(span, count) {
    const raw = span / Math.max(1, count);
    const base = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * base >= raw) return m * base;
    return 10 * base;
  }

  // Daily closes as a line over a light area, oldest left; one point per bar the API returned.
  function priceChart(candles, W, onPoint) {
    const n = candles.length;
    const closes = candles.map((c) => c.close);
    let lo = Math.min(...closes), hi = Math.max(...closes);
    if (lo === hi) { lo -= 1; hi += 1; }
    const step = niceStep(hi - lo, 4);
    const bottom = Math.floor(lo / step) * step, top = Math.ceil(hi / step) * step;
    const digits = step >= 1 ? 0 : step >= 0.1 ? 1 : 2;
    const tickFmt = new Intl.NumberFormat("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
    const ticks = [];
    for (let v = bottom; v <= top + step / 2; v += step) ticks.push(v);
    const H = W < 480 ? 200 : 260, T = 10, B = 24, R = 14;
    const L = 10 + CHAR_PX * Math.max(...ticks.map((v) => tickFmt.format(v).length));
    const plotW = W - L - R, plotH = H - T - B;
    const x = (i) => L + (n === 1 ? plotW / 2 : (plotW * i) / (n - 1));
    const y = (v) => T + (plotH * (top - v)) / (top - bottom);
    const direction = closes[n - 1] >= closes[0] ? "up" : "down";
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img",
      "aria-labelledby": "history-chart-title", "data-points": n,
      "data-first": candles[0].date, "data-last": candles[n - 1].date });
    root.append(svg("title", { id: "history-chart-title" },
      `Daily closes, ${n} bars from ${candles[0].date} to ${candles[n - 1].date}`));
    for (const v of ticks) {
      root.append(svg("line", { class: "grid-line", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
      root.append(svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, tickFmt.format(v)));
    }
    root.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: T + plotH, y2: T + plotH }));
    // Date labels: as many as fit, spread evenly, the first and the last always shown.
    const labels = Math.max(2, Math.min(n, Math.floor(plotW / (CHAR_PX * 6 + 36))));
    const shown = new Set();
    for (let k = 0; k < labels; k += 1) shown.add(Math.round((k * (n - 1)) / Math.max(1, labels - 1)));
    for (const i of shown) {
      const anchor = i === 0 && n > 1 ? "start" : i === n - 1 && n > 1 ? "end" : "middle";
      const day = new Date(String(candles[i].date) + "T00:00:00Z");
      root.append(svg("text", { x: x(i), y: H - 7, "text-anchor": anchor },
        Number.isFinite(day.getTime()) ? fmtDay.format(day) : String(candles[i].date)));
    }
    const line = closes.map((v, i) => `${x(i)},${y(v)}`).join(" ");
    root.append(svg("polygon", { class: "area-price " + direction,
      points: `${x(0)},${T + plotH} ${line} ${x(n - 1)},${T + plotH}` }));
    root.append(svg("polyline", { class: "line-price " + direction, points: line }));
    // A cursor that follows the pointer; the readout above the chart names the bar under it.
    const cursor = svg("g", { class: "cursor", visibility: "hidden" });
    const cursorLine = svg("line", { y1: T, y2: T + plotH });
    const cursorDot = svg("circle", { r: 3.5 });
    cursor.append(cursorLine, cursorDot);
    root.append(cursor);
    const hit = svg("rect", { x: L, y: T, width: plotW, height: plotH, fill: "transparent" });
    root.append(hit);
    hit.addEventListener("pointermove", (event) => {
      const box = root.getBoundingClientRect();
      const px = ((event.clientX - box.left) * W) / box.width;
      const i = n === 1 ? 0 : Math.min(n - 1, Math.max(0, Math.round(((px - L) / plotW) * (n - 1))));
      for (const [k, v] of [["x1", x(i)], ["x2", x(i)]]) cursorLine.setAttribute(k, String(v));
      cursorDot.setAttribute("cx", String(x(i)));
      cursorDot.setAttribute("cy", String(y(closes[i])));
      cursor.setAttribute("visibility", "visible");
      onPoint(i);
    });
    hit.addEventListener("pointerleave", () => {
      cursor.setAttribute("visibility", "hidden");
      onPoint(n - 1);
    });
    return root;
  }

  // -- one symbol's detail view ------------------------------------------------------------------------
  // Quote, daily history, profile and headlines load side by side, each into its own card; an answer
  // for a symbol that is no longer open (state.detailSeq moved on) is dropped.
  const current = (seq) => state.detail !== null && state.detail.seq === seq;

  function setCardStale(cardId, item) {
    $(cardId).dataset.stale = String(Boolean(item && item.stale));
  }

  function clearDetail() {
    for (const id of ["quote-tags", "quote-figures", "quote-list", "history-tags", "history-chart", "profile-tags",
      "profile-list", "news-tags", "news-list"]) $(id).replaceChildren();
    for (const id of ["detail-name", "detail-status", "history-readout", "history-meta", "profile-description",
      "quote-status", "history-status", "profile-status", "news-status"]) $(id).textContent = "";
    for (const id of ["quote-card", "history-card", "profile-card", "news-card"]) delete $(id).dataset.stale;
    delete $("history-chart").dataset.drawnWidth;
    $("news-empty").hidden = true;
    $("detail").querySelector(".detail-grid").hidden = false;
  }

  function route({ byLink, load = true }) {
    const match = DETAIL_HASH.exec(location.hash);
    let symbol = null;
    if (match) {
      try { symbol = decodeURIComponent(match[1]).toUpperCase(); } catch (exc) { symbol = null; }
    }
    if (symbol !== null && !SYMBOL_RE.test(symbol)) symbol = null;
    if (!state.me) return; // start() routes again after logging in
    if (symbol) openDetail(symbol, { byLink, load });
    else closeDetail({ restore: true });
  }

  function openDetail(symbol, { byLink, load }) {
    if (state.detail && state.detail.symbol === symbol) return;
    if (!state.detail) {
      state.overviewScroll = window.scrollY;
      state.openedByLink = byLink;
    }
    state.detailSeq += 1;
    state.detail = { symbol, seq: state.detailSeq, candles: null };
    clearDetail();
    $("detail-symbol").textContent = symbol;
    $("overview").hidden = true;
    $("detail").hidden = false;
    document.title = symbol + " \u00b7 stockcache";
    window.scrollTo(0, 0);
    $("detail-title").focus({ preventScroll: true });
    showDaysChoice();
    if (load) loadDetail();
  }

  function closeDetail({ restore }) {
    const was = state.detail;
    state.detail = null;
    state.detailSeq += 1;
    clearDetail();
    $("detail").hidden = true;
    $("overview").hidden = false;
    document.title = "stockcache";
    if (!was || !restore) return;
    window.scrollTo(0, state.overviewScroll);
    const link = document.querySelector(`#overview a.symbol-link[href="#/symbol/${encodeURIComponent(was.symbol)}"]`);
    if (link) link.focus({ preventScroll: true });
  }

  // Back to the overview: through the browser's history when a click brought us here, so Back and
  // this button agree; otherwise (a bookmark, a reload) by dropping the hash.
  function leaveDetail() {
    if (state.openedByLink) {
      history.back();
      return;
    }
    history.replaceState(null, "", location.pathname + location.search);
    route({ byLink: false });
  }

  function showDaysChoice() {
    for (const button of document.querySelectorAll("#history-card .segmented button")) {
      button.setAttribute("aria-pressed", String(Number(button.dataset.days) === state.historyDays));
    }
  }

  async function detailPart(seq, statusId, fetcher, render) {
    try {
      const data = await fetcher();
      if (!current(seq)) return;
      render(data);
      $(statusId).textContent = "";
    } catch (exc) {
      if (!current(seq) || exc.status === 401) return;
      $(statusId).textContent = "Could not load: " + exc.message;
      throw exc;
    }
  }

  function loadDetail() {
    const d = state.detail;
    if (!d) return Promise.resolve();
    const seq = d.seq;
    const path = encodeURIComponent(d.symbol);
    const quote = detailPart(seq, "quote-status", () => api("/api/quote/" + path), renderQuote).then(() => {
      if (current(seq)) { $("detail-status").textContent = ""; $("detail").querySelector(".detail-grid").hidden = false; }
    }, (exc) => {
      // An unknown symbol has nothing to show in any card: one message says so.
      if (current(seq) && exc.code === "symbol_not_found") {
        $("detail-status").textContent = exc.message;
        $("detail").querySelector(".detail-grid").hidden = true;
      }
    });
    return Promise.allSettled([
      quote,
      loadHistory(),
      detailPart(seq, "profile-status", () => api("/api/profile/" + path), renderProfile),
      detailPart(seq, "news-status", () => api(`/api/news/${path}?days=${NEWS_DAYS}`), renderNews),
    ]);
  }

  function loadHistory() {
    const d = state.detail;
    if (!d) return Promise.resolve();
    const days = state.historyDays;
    return detailPart(d.seq, "history-status",
      () => api(`/api/history/${encodeURIComponent(d.symbol)}?days=${days}`),
      (h) => { if (days === state.historyDays) renderHistory(h); });
  }

  function renderQuote(q) {
    marks($("quote-tags"), q);
    setCardStale("quote-card", q);
    $("quote-figures").replaceChildren(
      figure("price", "Price (" + unitOf(q.currency, q.symbol) + ")", bareUnit(q.price, q.currency)),
      figure("change", "Change", signedUnit(q.change, q.currency), trend(q.change)),
      figure("change_percent", "Change %", signedPct(q.change_percent), trend(q.change)));
    pairs($("quote-list"), [
      ["open", "Open", bareUnit(q.open, q.currency)],
      ["high", "High", bareUnit(q.high, q.currency)],
      ["low", "Low", bareUnit(q.low, q.currency)],
      ["previous_close", "Previous close", bareUnit(q.previous_close, q.currency)],
      ["timestamp", "As of", isNum(q.timestamp) && q.timestamp > 0 ? utcTime(q.timestamp) : DASH],
      ["age", "Fetched", isNum(q.age) ? duration(q.age) + " ago" : DASH],
      ["source", "Source", text(q.source)],
      ["cache", "Served from", text(q.cache)],
    ]);
  }

  function readout(i) {
    const candles = state.detail && state.detail.candles;
    if (!candles || !candles[i]) return;
    const c = candles[i];
    $("history-readout").textContent = `${c.date}: close ${money(c.close)} \u00b7 open ${money(c.open)} \u00b7 `
      + `high ${money(c.high)} \u00b7 low ${money(c.low)} \u00b7 volume ${compact(c.volume)}`;
  }

  function drawHistory(force) {
    const d = state.detail;
    if (d && d.candles && d.candles.length) {
      draw($("history-chart"), (w) => priceChart(d.candles, w, readout), force);
    }
  }

  function renderHistory(h) {
    const candles = (Array.isArray(h.candles) ? h.candles : []).filter((c) => c && isNum(c.close));
    state.detail.candles = candles;
    marks($("history-tags"), h);
    setCardStale("history-card", h);
    if (!candles.length) {
      $("history-chart").replaceChildren();
      $("history-readout").textContent = "No daily bars for this window.";
      $("history-meta").textContent = "";
      return;
    }
    $("history-meta").textContent = `${candles.length} daily bars, ${candles[0].date} to `
      + `${candles[candles.length - 1].date} \u00b7 ${text(h.source)}`
      + (isNum(h.age) ? ` \u00b7 fetched ${duration(h.age)} ago` : "");
    drawHistory(true);
    readout(candles.length - 1);
  }

  function renderProfile(p) {
    $("detail-name").textContent = p.name ? String(p.name) : "";
    marks($("profile-tags"), p);
    setCardStale("profile-card", p);
    const site = safeUrl(p.weburl);
    pairs($("profile-list"), [
      ["name", "Name", text(p.name)],
      ["exchange", "Exchange", text(p.exchange)],
      ["currency", "Currency", text(p.currency)],
      ["country", "Country", text(p.country)],
      ["industry", "Industry", text(p.industry)],
      ["ipo", "IPO", text(p.ipo)],
      ["market_cap", "Market cap", compact(p.market_cap)],
      ["shares_outstanding", "Shares outstanding", compact(p.shares_outstanding)],
      ["weburl", "Website", site ? el("a", { text: site, attrs: { href: site, target: "_blank",
        rel: "noopener noreferrer" } }) : text(p.weburl)],
    ]);
    $("profile-description").textContent = p.description ? String(p.description) : "";
  }

  function article(a) {
    const url = safeUrl(a.url);
    const headline = url
      ? el("a", { cls: "headline", text: text(a.headline), attrs: { href: url, target: "_blank", rel: "noopener noreferrer" } })
      : el("span", { cls: "headline", text: text(a.headline) });
    const byline = [a.source ? String(a.source) : "", a.published_at ? utcTime(a.published_at) : ""]
      .filter(Boolean).join(" \u00b7 ");
    return el("li", {}, headline, byline ? el("p", { cls: "byline", text: byline }) : null,
      a.summary ? el("p", { cls: "summary", text: a.summary }) : null);
  }

  function renderNews(n) {
    const articles = Array.isArray(n.articles) ? n.articles : [];
    marks($("news-tags"), n);
    setCardStale("news-card", n);
    $("news-list").replaceChildren(...articles.slice(0, NEWS_SHOWN).map(article));
    $("news-empty").hidden = articles.length > 0;
  }

  // -- start ---------------------------------------------------------------------------------------------------
  function boot() {
    $("login-form").addEventListener("submit", onLogin);
    $("logout").addEventListener("click", logout);
    $("refresh-now").addEventListener("click", () => refresh());
    $("detail-back").addEventListener("click", leaveDetail);
    $("base-currency").addEventListener("change", changeBase);
    for (const button of document.querySelectorAll("#history-card .segmented button")) {
      button.addEventListener("click", () => {
        state.historyDays = Number(button.dataset.days);
        showDaysChoice();
        loadHistory();
      });
    }
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && state.detail) leaveDetail();
    });
    window.addEventListener("hashchange", () => route({ byLink: true }));
    if (typeof ResizeObserver === "function") {
      const observer = new ResizeObserver(() => { drawKpiChart(false); drawHistory(false); });
      observer.observe($("kpi-chart"));
      observer.observe($("history-chart"));
    }
    submitter("watch-form", "watch-error",
      () => api("/api/watchlist", { method: "POST", body: { symbol: $("watch-symbol").value.trim() } }),
      loadWatchlist);
    submitter("position-form", "position-error",
      () => api("/api/portfolio", { method: "POST", body: {
        symbol: $("position-symbol").value.trim(),
        shares: asNumber($("position-shares").value),
        cost_basis: asNumber($("position-cost").value),
      } }),
      loadPortfolio);
    // Health is open: the badge and the demo banner show on the login page too, whatever brought us there.
    loadHealth();
    let saved = null;
    try { saved = sessionStorage.getItem(TOKEN_KEY); } catch (exc) { saved = null; }
    if (saved) {
      state.token = saved;
      start();
    } else {
      showLogin("");
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
  else boot();
})();
