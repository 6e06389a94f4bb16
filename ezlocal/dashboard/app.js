"use strict";
// The ezlocal dashboard. It polls /ui/api/overview (the job list) or
// /ui/api/jobs/{id} (a job page) every second. Every value from a job is
// inserted as text (textContent / setAttribute), never as markup.
(function () {
  var POLL_MS = 1000;
  var STATUSES = ["queued", "racing", "in_flight", "completed", "failed"];
  var statusClass = { queued: "mute", racing: "info", in_flight: "info", completed: "ok", failed: "bad" };
  var eventClass = { completed: "ok", webhook_delivered: "ok", quorum_reached: "ok", race_won: "ok",
    failed: "bad", webhook_failed: "bad", quorum_failed: "bad", timed_out: "bad", region_down: "bad",
    retried: "warn", rerouted: "warn", webhook_retried: "warn", cancelled: "warn", fallback_triggered: "warn",
    attempt: "info", dispatched: "info", pace_changed: "info", child_spawned: "info" };

  function h(tag, props) {
    var el = document.createElement(tag);
    if (props) for (var k in props) {
      if (k === "cls") el.className = props[k];
      else if (k === "onclick") el.addEventListener("click", props[k]);
      else if (props[k] !== undefined && props[k] !== null) el.setAttribute(k, String(props[k]));
    }
    for (var i = 2; i < arguments.length; i++) add(el, arguments[i]);
    return el;
  }
  function add(el, c) {
    if (c === null || c === undefined || c === false) return;
    if (Array.isArray(c)) { c.forEach(function (x) { add(el, x); }); return; }
    el.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
  }
  function replace(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
    for (var i = 1; i < arguments.length; i++) add(el, arguments[i]);
  }
  function pill(cls, text, attrs) {
    var p = h("span", attrs || null, text);
    p.className = "pill " + cls;
    return p;
  }
  function statusPill(s) { return pill(statusClass[s] || "mute", s.replace("_", " "), { "data-status": s }); }
  function clock(t) { return t ? new Date(Date.parse(t)).toLocaleTimeString() : ""; }
  function dur(ms) {
    if (ms < 1000) return Math.round(ms) + " ms";
    var s = ms / 1000;
    return s < 60 ? s.toFixed(s < 10 ? 2 : 1) + " s" : Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
  }
  function jobLink(id, text) {
    var a = h("a", { href: "/ui/jobs/" + encodeURIComponent(id), cls: "mono job-link", "data-job-id": id }, text || id);
    a.addEventListener("click", function (ev) {
      if (ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.button !== 0) return;
      ev.preventDefault();
      history.pushState(null, "", a.getAttribute("href"));
      route();
    });
    return a;
  }
  function table(head, rows, empty, cls) {
    if (!rows.length) return h("div", { cls: "empty" }, empty);
    return h("table", cls ? { cls: cls } : null, h("thead", null, h("tr", null, head.map(function (c) { return h("th", null, c); }))), h("tbody", null, rows));
  }
  function section(title, count, body, id) {
    return h("section", id ? { id: id } : null, h("h2", null, title, count === null ? null : h("span", { cls: "count" }, String(count))), body);
  }
  function kv(pairs) {
    return h("div", { cls: "grid" }, pairs.filter(function (p) { return p[1] !== "" && p[1] !== undefined && p[1] !== null; }).map(function (p) {
      return h("div", null, h("div", { cls: "k" }, p[0]), h("div", { cls: "v" }, p[1]));
    }));
  }
  function headerTable(hdrs) {
    var names = Object.keys(hdrs || {}).sort();
    return table(["Header", "Value"], names.map(function (n) {
      return h("tr", null, h("td", { cls: "mono" }, n), h("td", { cls: "mono" }, hdrs[n]));
    }), "No headers.");
  }

  // ---- routing
  var main = document.getElementById("main");
  var timer = null, gen = 0;
  function currentFilter() { return new URLSearchParams(location.search).get("status") || ""; }
  function route() {
    gen++;
    if (timer) { clearTimeout(timer); timer = null; }
    replace(main);
    var m = location.pathname.match(/^\/ui\/jobs\/([^\/]+)$/);
    if (m) poll(gen, "/ui/api/jobs/" + m[1], renderJob);
    else poll(gen, "/ui/api/overview" + (currentFilter() ? "?status=" + encodeURIComponent(currentFilter()) : ""), renderOverview);
  }
  window.addEventListener("popstate", route);
  document.getElementById("home").addEventListener("click", function (ev) {
    ev.preventDefault(); history.pushState(null, "", "/"); route();
  });
  function poll(g, url, render) {
    fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" })
      .then(function (r) {
        return r.json().then(function (body) { if (!r.ok) throw new Error(body && body.error ? body.error : "HTTP " + r.status); return body; });
      })
      .then(function (data) {
        if (g !== gen) return;
        render(data);
        document.getElementById("dot").className = "dot";
        replace(document.getElementById("status"), "live · updated " + new Date().toLocaleTimeString());
      })
      .catch(function (err) {
        if (g !== gen) return;
        document.getElementById("dot").className = "dot off";
        replace(document.getElementById("status"), "disconnected: " + err.message);
        if (/not found/.test(err.message)) replace(main, h("a", { href: "/", cls: "back" }, "← all jobs"), h("div", { cls: "notice" }, "No job with this ID."));
      })
      .then(function () { if (g === gen) timer = setTimeout(function () { poll(g, url, render); }, POLL_MS); });
  }

  // ---- job list
  function renderOverview(ov) {
    if (ov.url) replace(document.getElementById("engine-url"), ov.url);
    var f = currentFilter();
    var chips = [["", "all", ov.total]].concat(STATUSES.map(function (s) { return [s, s.replace("_", " "), ov.counts[s] || 0]; }));
    var filters = h("div", { cls: "filters", id: "filters" }, chips.map(function (c) {
      return h("button", { cls: "filter" + (c[0] === f ? " on" : ""), "data-filter": c[0], onclick: function () {
        history.pushState(null, "", c[0] ? "/?status=" + c[0] : "/"); route();
      } }, c[1], h("span", { cls: "n" }, String(c[2])));
    }));
    var regions = section("Regions", ov.regions.length, h("div", { cls: "regions" }, ov.regions.map(function (r) {
      return h("span", null, pill(r.down ? "bad" : "ok", r.name), r.down ? " down" : "", r.latency_ms ? h("span", { cls: "mute small" }, " +" + r.latency_ms + " ms") : null);
    })));
    var dests = section("Destinations", ov.destinations.length, table(["Host", "Pace", "In flight", "Queued", "Lanes (per region)"],
      ov.destinations.map(function (d) {
        return h("tr", { "data-host": d.host }, h("td", { cls: "mono" }, d.host),
          h("td", null, d.rps + " req/s · " + d.max_concurrent + " in flight per region"),
          h("td", { cls: "num" }, String(d.in_flight)), h("td", { cls: "num" }, String(d.queued)),
          h("td", { cls: "small" }, d.lanes.map(function (l) {
            return h("div", null, l.region + ": " + l.in_flight + " in flight" + (l.next_in_ms ? ", next start in " + dur(l.next_in_ms) : ""));
          })));
      }), "No destination called yet."), "destinations");
    var now = Date.parse(ov.now);
    var jobs = section("Jobs", ov.shown < ov.total && !f ? ov.shown + " newest of " + ov.total : ov.shown,
      table(["Job", "Status", "Request", "Attempts", "Regions", "Last status", "Webhooks", "Created", "Took"], ov.jobs.map(function (j) {
        var took = j.finished_at ? dur(Date.parse(j.finished_at) - Date.parse(j.created_at)) : dur(now - Date.parse(j.created_at)) + "…";
        return h("tr", { "data-job-id": j.id, "data-status": j.status },
          h("td", null, jobLink(j.id), j.parent ? h("div", { cls: "small mute" }, j.role + " of ", jobLink(j.parent)) : null),
          h("td", null, statusPill(j.status)),
          h("td", { cls: "mono job-url" }, j.method + " " + j.url),
          h("td", { cls: "num" }, String(j.attempts)),
          h("td", null, j.regions.join(", ")),
          h("td", { cls: "num" }, j.last_status ? String(j.last_status) : "—"),
          h("td", { cls: "num" }, j.webhooks ? j.delivered + "/" + j.webhooks : "—"),
          h("td", { cls: "small" }, clock(j.created_at)),
          h("td", { cls: "small" }, took));
      }), f ? "No " + f.replace("_", " ") + " job." : "No job yet: submit one to " + (ov.url || "this engine") + "."), "jobs");
    replace(main, filters, jobs, dests, regions);
  }

  // ---- job page
  function renderJob(j) {
    var back = h("a", { href: "/", cls: "back" }, "← all jobs");
    back.addEventListener("click", function (ev) { ev.preventDefault(); history.pushState(null, "", "/"); route(); });
    var title = h("div", { cls: "title" }, h("h2", { cls: "mono", id: "job-id" }, j.id), statusPill(j.status),
      j.settled ? pill("mute", "settled") : null);
    var took = j.finished_at ? dur(Date.parse(j.finished_at) - Date.parse(j.created_at)) : "";
    var summary = section("Job", null, kv([
      ["Dialect", j.dialect], ["Customer", j.customer], ["Idempotent key", h("span", { cls: "mono" }, j.idempotent_key)],
      ["Created", clock(j.created_at)], ["Finished", clock(j.finished_at)], ["Took", took],
      ["Attempts", String(j.attempts)], ["Regions that ran it", j.regions.join(", ") || "—"],
      ["Execution", [j.spec.execution_mode || "default", j.spec.region_policy ? " · " + j.spec.region_policy : ""]],
      ["Parent", j.parent ? [j.role + " of ", jobLink(j.parent)] : ""], ["Failure", j.reason || ""],
      ["Children", j.children.length ? j.children.map(function (c, i) { return [i ? ", " : "", jobLink(c.id), " (" + (c.role || "") + ", " + c.status + ")"]; }) : ""],
      ["Fallback", j.spec.fallback || ""], ["on_success", j.spec.on_success || ""], ["on_failure", j.spec.on_failure || ""]
    ]));
    var req = section("Request", null, [
      h("div", { cls: "sub-h" }, "URL"), h("pre", { id: "job-url" }, j.spec.method + " " + j.spec.url),
      h("div", { cls: "sub-h" }, "Headers (credentials redacted)"), headerTable(j.spec.headers),
      h("div", { cls: "sub-h" }, "Body" + (j.spec.body_truncated ? " (truncated)" : "")), h("pre", { id: "job-body" }, j.spec.body || "(empty)")]);
    var res = j.result ? section("Result", null, [
      kv([["Status", j.result.status ? String(j.result.status) : "no reply"], ["Region", j.result.region], ["URL", h("span", { cls: "mono" }, j.result.url)], ["Error", j.result.error || ""]]),
      h("div", { cls: "sub-h" }, "Headers"), headerTable(j.result.headers),
      h("div", { cls: "sub-h" }, "Body" + (j.result.body_truncated ? " (truncated)" : "")), h("pre", { id: "result-body" }, j.result.body || "(empty)")], "result")
      : section("Result", null, h("div", { cls: "empty" }, "Not finished yet."), "result");
    var attempts = j.events.filter(function (e) { return e.type === "attempt"; });
    var att = section("Attempts", attempts.length, table(["#", "Region", "Status", "URL", "Time", "Detail"], attempts.map(function (e) {
      return h("tr", null, h("td", { cls: "num" }, String(e.attempt)), h("td", null, e.region || ""),
        h("td", { cls: "num" }, e.status ? String(e.status) : "—"), h("td", { cls: "mono" }, e.url || ""),
        h("td", { cls: "small" }, clock(e.time)), h("td", { cls: "small" }, e.detail || ""));
    }), "No attempt yet."), "attempts");
    var hooks = section("Webhook deliveries", j.webhook_deliveries.length, [
      j.quorum ? h("div", { cls: "regions", id: "quorum" }, "Quorum: ", pill(j.quorum.reached ? "ok" : j.quorum.failed ? "bad" : "mute",
        j.quorum.reached ? "reached" : j.quorum.failed ? "not reached" : "pending"),
        " " + j.quorum.delivered + " of " + j.quorum.voting + " voting webhooks delivered, " + j.quorum.required + " required") : null,
      j.webhook_deliveries.length ? j.webhook_deliveries.map(function (d) {
        return h("div", { cls: "hook" },
          h("div", { cls: "hook-h" }, pill(d.outcome === "delivered" ? "ok" : d.outcome === "failed" ? "bad" : "mute", d.outcome),
            h("span", { cls: "mono" }, d.url), d.votes ? null : h("span", { cls: "mute small" }, "(does not vote)")),
          table(["Attempt", "Region", "Status", "Signature", "Time", "Then"], d.attempts.map(function (a) {
            var sig = a.signed ? (a.status === 401 || a.status === 403 ? pill("bad", "signed · rejected by receiver")
              : a.status >= 200 && a.status < 300 ? pill("ok", "signed · accepted") : pill("info", "signed"))
              : pill("mute", "unsigned");
            var then = a.type === "webhook_retried" ? "retry in " + dur(a.delay_ms) : a.type === "webhook_failed" ? "gave up" : "delivered";
            return h("tr", null, h("td", { cls: "num" }, String(a.attempt)), h("td", null, a.region || ""),
              h("td", { cls: "num" }, a.status ? String(a.status) : "—"), h("td", null, sig),
              h("td", { cls: "small" }, clock(a.time)), h("td", { cls: "small" }, then + (a.detail ? " · " + a.detail : "")));
          }), "No attempt yet."));
      }) : h("div", { cls: "empty" }, "This job has no webhook.")], "webhooks");
    var t0 = j.events.length ? Date.parse(j.events[0].time) : 0;
    var events = section("Event history", j.events.length, table(["+", "Event", "Region", "Detail"], j.events.map(function (e) {
      var d = [];
      if (e.from_region) d.push("from " + e.from_region);
      if (e.attempt) d.push("attempt " + e.attempt);
      if (e.status) d.push("status " + e.status);
      if (e.url) d.push(e.url);
      if (e.job_id) d.push("job " + e.job_id);
      if (e.delay_ms) d.push("delay " + dur(e.delay_ms));
      if (e.signed) d.push("signed");
      if (e.detail) d.push(e.detail);
      return h("tr", { "data-event": e.type }, h("td", { cls: "small num" }, dur(Date.parse(e.time) - t0)),
        h("td", null, pill(eventClass[e.type] || "mute", e.type)), h("td", null, e.region || ""), h("td", { cls: "small mono" }, d.join(" · ")));
    }), "No event."), "events");
    replace(main, back, title, summary, req, res, att, hooks, events);
  }

  route();
})();
