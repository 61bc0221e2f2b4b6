// camxuc serve: the workbench page. Plain JS, no framework, nothing fetched from elsewhere.
"use strict";

// Every string of the page, one table per language.
const STRINGS = {
  vi: {
    tagline: "bàn làm việc cục bộ",
    nav_classify: "Phân loại", nav_review: "Duyệt", nav_adapt: "Thích ứng", nav_report: "Báo cáo",
    lang_button: "English",
    classify_title: "Phân loại bản ghi",
    classify_note: "Thả tệp âm thanh vào đây hoặc chọn nhiều tệp. Mọi thứ chạy trên máy này; không có gì rời khỏi máy.",
    drop_here: "Thả tệp âm thanh (WAV, FLAC, MP3, OGG) vào đây hoặc bấm để chọn",
    segments_option: "Bản ghi dài: quyết định từng đoạn (cắt tại chỗ ngừng)",
    queued: "đang chờ", uploading: "đang tải lên", classifying: "đang phân loại", done: "xong", failed: "lỗi",
    label: "Nhãn", confidence: "Độ tin cậy", probabilities: "Xác suất", route: "Tuyến",
    unfamiliarity: "Độ lạ", evidence: "Bằng chứng (z-score lớn nhất)", fired_rules: "Luật đã kích hoạt",
    rationale: "Lý giải", unsupported: "Lý giải nhắc tới điều không có trong quyết định", contributions: "Đóng góp vào quyết định", acoustic_weight: "trọng số âm học", push: "đẩy", none: "—", feature: "đặc trưng", value: "giá trị", z: "z",
    route_acoustic: "mô hình âm học (chắc chắn)", route_rules: "luật (clip mơ hồ)", route_llm: "LLM (clip mơ hồ)",
    unfamiliar_hint: "≈1 với người nói mới; càng lớn càng khác dữ liệu huấn luyện",
    segments: "Các đoạn", segment: "Đoạn", recent: "Đã phân loại gần đây",
    label_calm: "bình tĩnh", label_angry: "tức giận", label_panic: "hoảng loạn", label_uncertain: "không chắc",
    skip: "bỏ qua", speaker: "Người nói (tuỳ chọn):",
    review_title: "Hàng đợi duyệt",
    review_note: "Các clip được chuyển tuyến, có độ tin cậy thấp hoặc lạ. Gán nhãn bằng phím: 1 = bình tĩnh, 2 = tức giận, 3 = hoảng loạn, s = bỏ qua.",
    review_empty: "Không còn clip nào cần duyệt.",
    review_left: "còn lại", labelled_as: "đã gán nhãn",
    reason_routed: "chuyển tuyến", reason_low_confidence: "độ tin cậy thấp", reason_unfamiliar: "lạ",
    adapt_title: "Thích ứng với nơi dùng",
    adapt_note: "Thích ứng mô hình đang dùng với các clip đã tải lên và các nhãn đã thu thập (labels.csv) thành một mô hình MỚI; mô hình nguồn chỉ được đọc. Mô hình mới chỉ được dùng khi bạn chấp nhận, sau khi xem kết quả trước/sau trên phần nhãn giữ lại.",
    adapt_run: "Chạy thích ứng", adapt_running: "đang thích ứng… (có thể mất vài phút)",
    adapt_accept: "Dùng mô hình mới", adapt_accepted: "Đang dùng mô hình mới:",
    adapt_keep: "Để giữ sau khi khởi động lại: camxuc serve --model",
    adapt_cli: "Cùng việc đó bằng dòng lệnh:",
    adapt_before: "Trước (mô hình nguồn)", adapt_after: "Sau (mô hình thích ứng)",
    adapt_no_heldout: "Không có phần nhãn giữ lại để so sánh (cần nhãn của ít nhất hai lớp).",
    adapt_refitted: "Đã khớp lại", adapt_kept: "Giữ nguyên", adapt_failed: "Tệp lỗi",
    adapt_threshold: "Ngưỡng chuyển tuyến", adapt_temperature: "Nhiệt độ", adapt_clips: "Clip dùng được (có nhãn)",
    macro_f1: "macro-F1", ece: "ECE", n_clips: "số clip",
    labels_collected: "Nhãn đã thu thập",
    report_title: "Báo cáo đánh giá",
    report_note: "Chưa có báo cáo. Viết một báo cáo bằng lệnh dưới đây rồi khởi động lại serve với --report THƯ_MỤC (mặc định <data>/report):",
    footer: "camxuc — công cụ hỗ trợ phân loại, không phải thiết bị chẩn đoán. Mô hình:",
    err_network: "không kết nối được tới máy chủ",
  },
  en: {
    tagline: "local workbench",
    nav_classify: "Classify", nav_review: "Review", nav_adapt: "Adapt", nav_report: "Report",
    lang_button: "Tiếng Việt",
    classify_title: "Classify recordings",
    classify_note: "Drop audio files here or pick several. Everything runs on this machine; nothing leaves it.",
    drop_here: "Drop audio files (WAV, FLAC, MP3, OGG) here or click to pick",
    segments_option: "Long recordings: decide each utterance (cut at pauses)",
    queued: "queued", uploading: "uploading", classifying: "classifying", done: "done", failed: "failed",
    label: "Label", confidence: "Confidence", probabilities: "Probabilities", route: "Route",
    unfamiliarity: "Unfamiliarity", evidence: "Evidence (largest z-scores)", fired_rules: "Fired rules",
    rationale: "Rationale", unsupported: "The rationale names something the decision does not hold", contributions: "What decided it", acoustic_weight: "acoustic weight", push: "push", none: "—", feature: "feature", value: "value", z: "z",
    route_acoustic: "acoustic model (confident)", route_rules: "rules (ambiguous clip)", route_llm: "LLM (ambiguous clip)",
    unfamiliar_hint: "≈1 for a new speaker; larger is further from the training data",
    segments: "Segments", segment: "Segment", recent: "Recently classified",
    label_calm: "calm", label_angry: "angry", label_panic: "panic", label_uncertain: "uncertain",
    skip: "skip", speaker: "Speaker (optional):",
    review_title: "Review queue",
    review_note: "Routed, low-confidence and unfamiliar clips. Label with the keyboard: 1 = calm, 2 = angry, 3 = panic, s = skip.",
    review_empty: "Nothing left to review.",
    review_left: "left", labelled_as: "labelled",
    reason_routed: "routed", reason_low_confidence: "low confidence", reason_unfamiliar: "unfamiliar",
    adapt_title: "Adapt to this site",
    adapt_note: "Adapt the model in use to the uploaded clips and the collected labels (labels.csv) into a NEW model; the source model is only read. The new model is used only when you accept it, after seeing the before/after figures on held-out labels.",
    adapt_run: "Run adaptation", adapt_running: "adapting… (may take minutes)",
    adapt_accept: "Use the new model", adapt_accepted: "Now using the new model:",
    adapt_keep: "To keep it after a restart: camxuc serve --model",
    adapt_cli: "The same from the command line:",
    adapt_before: "Before (source model)", adapt_after: "After (adapted model)",
    adapt_no_heldout: "No held-out labels to compare on (needs labels of at least two classes).",
    adapt_refitted: "Refitted", adapt_kept: "Kept", adapt_failed: "Failed files",
    adapt_threshold: "Routing threshold", adapt_temperature: "Temperature", adapt_clips: "Usable clips (labelled)",
    macro_f1: "macro-F1", ece: "ECE", n_clips: "clips",
    labels_collected: "Labels collected",
    report_title: "Evaluation report",
    report_note: "No report yet. Write one with the command below, then restart serve with --report DIR (default <data>/report):",
    footer: "camxuc — a triage aid, not a diagnostic device. Model:",
    err_network: "cannot reach the server",
  },
};

let health = null;
let lang = new URLSearchParams(location.search).get("lang") || localStorage.getItem("camxuc-lang") || "vi";
if (!STRINGS[lang]) lang = "vi";
let labels = ["calm", "angry", "panic"];
const t = (k) => (STRINGS[lang] && STRINGS[lang][k]) || STRINGS.en[k] || k;
const labelText = (l) => t("label_" + l);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

function applyStrings() {
  document.documentElement.lang = lang;
  for (const e of document.querySelectorAll("[data-i18n]")) e.textContent = t(e.dataset.i18n);
  document.getElementById("lang").textContent = t("lang_button");
}

// ---------- decisions ----------

function topProb(d) {
  let best = null;
  for (const [l, p] of Object.entries(d.probs)) if (!best || p > best[1]) best = [l, p];
  return best;
}

function pct(p) { return (100 * p).toFixed(0) + "%"; }

function renderDecision(d) {
  const box = el("div", { class: "decision", "data-file": d.file, "data-label": d.label });
  const left = el("div");
  const [, p] = topProb(d);
  left.append(el("h3", { text: t("label") }), el("span", { class: "badge " + d.label, text: labelText(d.label) }));
  left.append(el("h3", { text: t("confidence") + " " + pct(p) }));
  const bar = el("div", { class: "bar" }, el("div", { class: "seg " + d.label, style: "width:" + pct(p) }));
  left.append(bar);
  left.append(el("h3", { text: t("probabilities") }));
  const probs = el("div", { class: "probs" });
  for (const [l, v] of Object.entries(d.probs)) {
    probs.append(el("span", { text: labelText(l) }),
      el("div", { class: "bar" }, el("div", { class: "seg " + l, style: "width:" + pct(v) })),
      el("span", { text: pct(v) }));
  }
  left.append(probs);
  const facts = el("dl", { class: "facts" });
  const u = d.unfamiliarity == null ? t("none") : d.unfamiliarity.toFixed(2);
  facts.append(el("dt", { text: t("route") }), el("dd", { class: "route", text: t("route_" + d.route) }),
    el("dt", { text: t("unfamiliarity") }), el("dd", { class: "unfamiliarity", title: t("unfamiliar_hint"), text: u }));
  left.append(el("h3", { text: "" }), facts);
  if (d.file) left.append(el("audio", { controls: "", preload: "none", src: "/api/clips/" + encodeURIComponent(d.file) }));

  const right = el("div");
  right.append(el("h3", { text: t("evidence") }));
  const z = Object.entries((d.evidence && d.evidence.z) || {}).sort((a, b) => Math.abs(b[1]) - Math.abs(a[1])).slice(0, 8);
  if (z.length) {
    const table = el("table", { class: "ev" },
      el("tr", {}, el("th", { text: t("feature") }), el("th", { text: t("value") }), el("th", { text: t("z") })));
    for (const [name, zv] of z) {
      const v = d.evidence.values[name];
      table.append(el("tr", {}, el("td", { text: name }),
        el("td", { class: "num", text: v == null ? "" : Number(v).toPrecision(4) }),
        el("td", { class: "num " + (zv >= 0 ? "zpos" : "zneg"), text: (zv >= 0 ? "+" : "") + zv.toFixed(2) })));
    }
    right.append(table);
  } else right.append(el("div", { text: t("none") }));
  right.append(el("h3", { text: t("fired_rules") }));
  if (d.fired_rules && d.fired_rules.length) {
    const ul = el("ul", { class: "rules" });
    // Each rule's push in the fused decision (0 when the clip was kept).
    const pushes = {};
    for (const p of (d.contributions && d.contributions.rules) || []) pushes[p.id] = p.push;
    for (const r of d.fired_rules) {
      const s = lang === "vi" && r.statement_vi ? r.statement_vi : r.statement_en;
      const push = r.id in pushes ? " · " + t("push") + " " + (pushes[r.id] >= 0 ? "+" : "") + Number(pushes[r.id]).toFixed(2) : "";
      ul.append(el("li", {}, el("span", { class: "badge " + r.label, text: labelText(r.label) }), " ", s, " ",
        el("code", { text: r.id + " ×" + Number(r.weight).toFixed(2) + push })));
    }
    right.append(ul);
  } else right.append(el("div", { text: t("none") }));
  if (d.contributions) {
    const c = d.contributions;
    right.append(el("h3", { text: t("contributions") }),
      el("div", { text: t("acoustic_weight") + " " + Number(c.acoustic_weight).toFixed(2) +
        (c.unfamiliarity_term && c.unfamiliarity_term.excess > 0 ? " · " + t("unfamiliarity") + " +" + Number(c.unfamiliarity_term.excess).toFixed(2) : "") }));
  }
  right.append(el("h3", { text: t("rationale") }), el("div", { class: "rationale", text: d.rationale || t("none") }));
  // The automatic faithfulness check (src/pipeline/faithful.rs): say so when it failed.
  if (d.rationale_check && !d.rationale_check.faithful) {
    right.append(el("div", { class: "unsupported", text: t("unsupported") + ": " + d.rationale_check.unsupported.join(", ") }));
  }
  box.append(left, right);
  return box;
}

function renderSegments(list) {
  const wrap = el("div", { class: "segments", "data-file": list.length ? list[0].file : "" });
  const end = Math.max(...list.map((d) => (d.segment ? d.segment.end_s : 0)), 0.001);
  const line = el("div", { class: "timeline" });
  const detail = el("div");
  list.forEach((d, i) => {
    const s = d.segment || { start_s: 0, end_s: end };
    const seg = el("div", {
      class: "seg " + d.label,
      style: `left:${(100 * s.start_s) / end}%;width:${Math.max((100 * (s.end_s - s.start_s)) / end, 0.4)}%`,
      title: `${s.start_s.toFixed(1)}–${s.end_s.toFixed(1)} s: ${labelText(d.label)} ${pct(topProb(d)[1])}`,
    });
    seg.onclick = () => {
      for (const o of line.children) o.classList.remove("sel");
      seg.classList.add("sel");
      detail.replaceChildren(el("h3", { text: `${t("segment")} ${i + 1}: ${s.start_s.toFixed(1)}–${s.end_s.toFixed(1)} s` }), renderDecision(d));
    };
    line.append(seg);
  });
  wrap.append(el("h3", { text: `${t("segments")} (${list.length})` }), line, detail);
  if (line.firstChild) line.firstChild.onclick();
  return wrap;
}

// ---------- classify page ----------

let active = 0;
const waiting = [];

function addFiles(files) {
  const results = document.getElementById("results");
  for (const f of files) {
    const status = el("span", { class: "status", text: t("queued") });
    const prog = el("progress", { max: "100", value: "0" });
    const card = el("div", { class: "card clip-card" },
      el("div", { class: "card-head" }, el("span", { class: "name", text: f.name }), status), prog);
    results.prepend(card);
    waiting.push({ f, card, status, prog });
  }
  pump();
}

// Two uploads at a time: the server decides one clip at a time anyway.
function pump() {
  while (active < 2 && waiting.length) {
    active++;
    upload(waiting.shift()).finally(() => { active--; pump(); });
  }
}

function upload({ f, card, status, prog }) {
  return new Promise((resolve) => {
    const segments = document.getElementById("segments").checked;
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/classify" + (segments ? "?segments=true" : ""));
    xhr.responseType = "json";
    status.textContent = t("uploading");
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) prog.value = (90 * e.loaded) / e.total; };
    xhr.upload.onload = () => { status.textContent = t("classifying"); prog.removeAttribute("value"); };
    xhr.onload = () => {
      prog.remove();
      const body = xhr.response;
      if (xhr.status === 200 && body) {
        status.textContent = t("done");
        card.classList.add("decided");
        card.append(Array.isArray(body) ? renderSegments(body) : renderDecision(body));
      } else {
        status.textContent = t("failed") + " (" + xhr.status + ")";
        card.append(el("div", { class: "error", text: (body && body.error) || xhr.statusText }));
      }
      resolve();
    };
    xhr.onerror = () => {
      prog.remove();
      status.textContent = t("failed");
      card.append(el("div", { class: "error", text: t("err_network") }));
      resolve();
    };
    const form = new FormData();
    form.append("file", f, f.name);
    xhr.send(form);
  });
}

// Clips classified earlier (also before a restart), newest first.
async function loadRecent() {
  const box = document.getElementById("recent");
  try {
    const items = (await (await fetch("/api/decisions")).json()).items || [];
    document.getElementById("recent-title").hidden = !items.length;
    box.replaceChildren(...items.map((it) => el("div", { class: "card recent-card" },
      el("div", { class: "card-head" }, el("span", { class: "name", text: it.file })),
      it.decisions.length === 1 && !it.decisions[0].segment ? renderDecision(it.decisions[0]) : renderSegments(it.decisions))));
  } catch (e) { /* the drop zone still works */ }
}

function setupClassify() {
  loadRecent();
  const drop = document.getElementById("drop");
  const input = document.getElementById("file-input");
  input.addEventListener("change", () => { addFiles([...input.files]); input.value = ""; });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    addFiles([...e.dataTransfer.files]);
  });
}

// ---------- review page ----------

let queue = [];
let current = 0;

async function loadQueue() {
  try {
    const r = await fetch("/api/review");
    queue = (await r.json()).items || [];
  } catch (e) {
    document.getElementById("review-status").textContent = t("err_network");
    queue = [];
  }
  current = 0;
  showQueue();
}

function showQueue(message) {
  const list = document.getElementById("queue");
  const detail = document.getElementById("review-detail");
  list.replaceChildren();
  queue.forEach((it, i) => {
    const li = el("li", { class: "review-item" + (i === current ? " current" : ""), "data-file": it.file },
      el("div", { class: "name", text: it.file }),
      el("div", { class: "reason" }, el("span", { class: "badge " + it.decision.label, text: labelText(it.decision.label) }),
        " " + pct(topProb(it.decision)[1]) + " · " + t("reason_" + it.reason)));
    li.onclick = () => { current = i; showQueue(); };
    list.append(li);
  });
  const status = document.getElementById("review-status");
  status.textContent = (message ? message + " · " : "") + queue.length + " " + t("review_left");
  if (!queue.length) {
    detail.replaceChildren(el("p", { class: "note empty", text: t("review_empty") }));
    return;
  }
  const it = queue[current];
  detail.replaceChildren(el("div", { class: "card" },
    el("div", { class: "card-head" }, el("span", { class: "name", text: it.file }),
      el("span", { class: "status", text: t("reason_" + it.reason) })),
    renderDecision(it.decision)));
}

async function labelCurrent(label) {
  if (!queue.length) return;
  const it = queue[current];
  const status = document.getElementById("review-status");
  try {
    const r = await fetch("/api/label", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ file: it.file, label, speaker: document.getElementById("speaker").value }),
    });
    const body = await r.json();
    if (!r.ok) { status.textContent = body.error || r.statusText; return; }
    queue.splice(current, 1);
    if (current >= queue.length) current = 0;
    showQueue(it.file + ": " + t("labelled_as") + " " + labelText(label));
  } catch (e) {
    status.textContent = t("err_network");
  }
}

function reviewKey(key) {
  if (key === "s") {
    if (queue.length) { current = (current + 1) % queue.length; showQueue(); }
    return;
  }
  const i = ["1", "2", "3"].indexOf(key);
  if (i >= 0 && i < labels.length) labelCurrent(labels[i]);
}

function setupReview() {
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || e.target.tagName === "INPUT") return;
    reviewKey(e.key.toLowerCase());
  });
  for (const b of document.querySelectorAll(".keys button")) b.onclick = () => reviewKey(b.dataset.key);
  loadQueue();
}

// ---------- adapt page ----------

async function setupAdapt(health) {
  const counts = document.getElementById("label-counts");
  try {
    const r = await (await fetch("/api/labels")).json();
    counts.replaceChildren(el("h3", { text: t("labels_collected") + ": " + r.total }),
      el("div", { text: labels.map((l) => labelText(l) + " " + (r.counts[l] || 0)).join(" · ") }));
  } catch (e) { counts.textContent = t("err_network"); }
  const data = (health && health.data) || "site";
  document.getElementById("adapt-command").textContent =
    `camxuc adapt --out NEWDIR --labelled ${data}/labels.csv --unlabelled ${data}/clips`;
  const button = document.getElementById("adapt-run");
  const status = document.getElementById("adapt-status");
  const result = document.getElementById("adapt-result");
  button.onclick = async () => {
    button.disabled = true;
    status.textContent = t("adapt_running");
    result.replaceChildren();
    try {
      const r = await fetch("/api/adapt", { method: "POST" });
      const body = await r.json();
      status.textContent = "";
      if (!r.ok) result.append(el("div", { class: "error", text: body.error || r.statusText }));
      else result.append(renderAdapt(body, data));
    } catch (e) {
      status.textContent = t("err_network");
    }
    button.disabled = false;
  };
}

function renderAdapt(body, data) {
  const rep = body.report;
  const card = el("div", { class: "card adapt-report", "data-model": body.model });
  card.append(el("div", { class: "card-head" }, el("span", { class: "name", text: body.model })));
  const table = el("table", { class: "ev" },
    el("tr", {}, el("th", { text: "" }), el("th", { text: t("macro_f1") }), el("th", { text: t("ece") }), el("th", { text: t("n_clips") })));
  if (rep.before && rep.after) {
    for (const [k, s] of [["adapt_before", rep.before], ["adapt_after", rep.after]]) {
      table.append(el("tr", {}, el("td", { text: t(k) }), el("td", { class: "num", text: s.macro_f1.toFixed(3) }),
        el("td", { class: "num", text: s.ece.toFixed(3) }), el("td", { class: "num", text: String(s.n) })));
    }
    card.append(table);
    if (rep.held_out) card.append(el("p", { class: "note", text: rep.held_out }));
  } else card.append(el("p", { class: "note", text: t("adapt_no_heldout") }));
  const facts = el("dl", { class: "facts" });
  facts.append(
    el("dt", { text: t("adapt_clips") }), el("dd", { text: `${rep.n_site} (${rep.n_labelled})` }),
    el("dt", { text: t("adapt_threshold") }), el("dd", { text: `${rep.threshold_before.toFixed(3)} → ${rep.threshold_after.toFixed(3)}` }),
    el("dt", { text: t("adapt_temperature") }), el("dd", { text: `${rep.temperature_before.toFixed(2)} → ${rep.temperature_after.toFixed(2)}` }),
    el("dt", { text: t("adapt_refitted") }), el("dd", { text: rep.refitted.join("; ") || t("none") }),
    el("dt", { text: t("adapt_kept") }), el("dd", { text: rep.not_refitted.join("; ") || t("none") }),
    el("dt", { text: t("adapt_failed") }), el("dd", { text: String(rep.failed.length) }));
  card.append(facts);
  const accept = el("button", { type: "button", id: "adapt-accept", text: t("adapt_accept") });
  const said = el("span", { class: "status" });
  accept.onclick = async () => {
    accept.disabled = true;
    const r = await fetch("/api/adapt/accept", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ model: body.model }),
    });
    const b = await r.json();
    if (r.ok) {
      said.textContent = `${t("adapt_accepted")} ${b.model}. ${t("adapt_keep")} ${b.model}`;
      document.getElementById("model-name").textContent = b.model;
    } else {
      said.textContent = b.error || r.statusText;
      accept.disabled = false;
    }
  };
  card.append(el("div", { class: "keys" }, accept, said));
  return card;
}

// ---------- report page ----------

async function setupReport() {
  const box = document.getElementById("report-body");
  try {
    const r = await (await fetch("/api/report")).json();
    if (r.available) {
      box.replaceChildren(el("iframe", { class: "report", src: "/api/report/report.html", title: t("report_title") }));
    } else {
      box.replaceChildren(el("p", { class: "note", text: t("report_note") }),
        el("pre", { text: `camxuc eval --manifest M --report ${r.dir}` }));
    }
  } catch (e) { box.textContent = t("err_network"); }
}

// ---------- start ----------

async function start() {
  const page = { "/": "classify", "/review": "review", "/adapt": "adapt", "/report": "report" }[location.pathname] || "classify";
  document.getElementById("page-" + page).hidden = false;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === page);
  document.getElementById("lang").onclick = () => {
    lang = lang === "vi" ? "en" : "vi";
    localStorage.setItem("camxuc-lang", lang);
    applyStrings();
    if (page === "review") showQueue();
    if (page === "report") setupReport();
    if (page === "adapt") setupAdapt(health);
    if (page === "classify") loadRecent();
  };
  applyStrings();
  try {
    health = await (await fetch("/api/health")).json();
    if (health.labels) labels = health.labels;
    document.getElementById("model-name").textContent = health.model;
  } catch (e) { /* the page still works; requests will say what failed */ }
  if (page === "classify") setupClassify();
  if (page === "review") setupReview();
  if (page === "adapt") setupAdapt(health);
  if (page === "report") setupReport();
}

start();
