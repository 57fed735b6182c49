// The data-api dashboard: polls /dashboard/data, keeps each series' points for the chosen range,
// and draws them on canvases. No libraries; everything the page needs comes from this service.
'use strict';

const PALETTE = ['#2e6bd8', '#e0662c', '#2a9d5c', '#a63fbf', '#c9a21a', '#19a3b5', '#d1407a', '#5f6b7a'];
const state = {
  range: 300,     // seconds shown
  since: null,    // newest point held (unix ms): the next poll asks only for newer ones
  info: null,     // the last response, without its panels
  panels: new Map(), // title -> {row, unit, series: Map(name -> [[t, v]]), canvas, legend}
  timer: null,
};

// ---- numbers -------------------------------------------------------------------------------

function si(v, digits) {
  const abs = Math.abs(v);
  if (abs >= 1e9) return (v / 1e9).toFixed(digits) + ' G';
  if (abs >= 1e6) return (v / 1e6).toFixed(digits) + ' M';
  if (abs >= 1e3) return (v / 1e3).toFixed(digits) + ' k';
  return v.toFixed(abs > 0 && abs < 10 ? Math.max(digits, 2) : digits) + ' ';
}

function format(v, unit) {
  if (v === null || v === undefined || Number.isNaN(v)) return '–';
  switch (unit) {
    case 'per_second': return si(v, 1) + '/s';
    case 'ratio': return (v * 100).toFixed(v > 0.999 && v < 1 ? 3 : 2) + ' %';
    case 'seconds':
      if (v < 1e-3) return (v * 1e6).toFixed(1) + ' µs';
      if (v < 1) return (v * 1e3).toFixed(2) + ' ms';
      return v.toFixed(2) + ' s';
    case 'bytes': {
      const units = ['B', 'KiB', 'MiB', 'GiB'];
      let i = 0;
      while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
      return v.toFixed(i ? 1 : 0) + ' ' + units[i];
    }
    case 'cores': return v.toFixed(2) + ' cores';
    default: return Number.isInteger(v) ? String(v) : v.toFixed(1);
  }
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour12: false });
}

// ---- building the page -----------------------------------------------------------------------

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function panelFor(p) {
  let panel = state.panels.get(p.title);
  if (panel) return panel;
  let row = document.querySelector(`.row[data-row="${CSS.escape(p.row)}"]`);
  if (!row) {
    document.getElementById('rows').append(el('h2', null, p.row));
    row = el('div', 'row');
    row.dataset.row = p.row;
    document.getElementById('rows').append(row);
  }
  const box = el('div', 'panel');
  const canvas = el('canvas');
  canvas.dataset.title = p.title;
  canvas.dataset.points = '0';
  const legend = el('div', 'legend');
  box.append(el('h3', null, p.title), canvas, legend);
  row.append(box);
  panel = { unit: p.unit, series: new Map(), canvas, legend, hover: null };
  canvas.addEventListener('mousemove', (ev) => hover(panel, ev));
  canvas.addEventListener('mouseleave', () => { panel.hover = null; hideTooltip(); draw(panel); });
  state.panels.set(p.title, panel);
  return panel;
}

function notices(info, error) {
  const box = document.getElementById('notices');
  box.replaceChildren();
  const say = (text, bad) => box.append(el('p', bad ? 'bad' : null, text));
  if (error) say(error, true);
  if (!info) return;
  if (!info.metrics) {
    say('Metrics are off (started with --metrics false): the service records nothing, so there is nothing to chart.', true);
    return;
  }
  const age = (info.now_ms - info.started_ms) / 1000;
  if (age < state.range) {
    say(`Started ${Math.round(age)} s ago: the charts fill in as samples arrive ` +
        `(one every ${info.interval_ms / 1000} s; each point is a rate over the ${info.rate_window_s} s before it).`);
  }
}

function tiles(info) {
  const box = document.getElementById('tiles');
  box.replaceChildren(...info.tiles.map((t) => {
    const tile = el('div', 'tile');
    tile.dataset.title = t.title;
    tile.append(el('div', 'title', t.title), el('div', 'value', format(t.value, t.unit)));
    return tile;
  }));
}

// ---- data ------------------------------------------------------------------------------------

function merge(data) {
  const oldest = data.now_ms - state.range * 1000;
  for (const p of data.panels) {
    const panel = panelFor(p);
    for (const s of p.series) {
      const points = panel.series.get(s.name) || [];
      const last = points.length ? points[points.length - 1][0] : -Infinity;
      for (const pt of s.points) if (pt[0] > last) points.push(pt);
      panel.series.set(s.name, points);
    }
    for (const [name, points] of panel.series) {
      while (points.length && points[0][0] < oldest) points.shift();
      if (!points.length) panel.series.delete(name);
    }
  }
}

async function poll() {
  const query = new URLSearchParams({ range: String(state.range) });
  if (state.since !== null) query.set('since', String(state.since));
  let wait = 1000;
  try {
    const resp = await fetch('/dashboard/data?' + query, { cache: 'no-store' });
    if (!resp.ok) throw new Error(`the service answered ${resp.status}`);
    const data = await resp.json();
    state.info = data;
    wait = Math.max(1000, data.interval_ms);
    merge(data);
    state.since = data.now_ms;
    tiles(data);
    notices(data, null);
    document.getElementById('status').textContent =
      `updated ${clock(data.now_ms)} · up ${Math.round((data.now_ms - data.started_ms) / 1000)} s`;
    for (const panel of state.panels.values()) draw(panel);
  } catch (e) {
    notices(state.info, `Cannot read /dashboard/data (${e.message}); retrying.`);
    wait = 3000;
  }
  state.timer = setTimeout(poll, wait);
}

function setRange(seconds) {
  state.range = seconds;
  state.since = null;
  // Drawn empty at once, so no chart shows the previous range's lines (or counts its points)
  // until the new range's data arrives.
  for (const panel of state.panels.values()) {
    panel.series.clear();
    panel.hover = null;
    draw(panel);
  }
  hideTooltip();
  for (const b of document.querySelectorAll('#ranges button')) {
    b.classList.toggle('active', Number(b.dataset.range) === seconds);
  }
  clearTimeout(state.timer);
  poll();
}

// ---- charts ----------------------------------------------------------------------------------

function frame(panel) {
  const c = panel.canvas;
  const ratio = window.devicePixelRatio || 1;
  const w = c.clientWidth, h = c.clientHeight;
  if (c.width !== Math.round(w * ratio) || c.height !== Math.round(h * ratio)) {
    c.width = Math.round(w * ratio);
    c.height = Math.round(h * ratio);
  }
  const ctx = c.getContext('2d');
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  const now = state.info ? state.info.now_ms : Date.now();
  const box = { left: 64, right: w - 8, top: 6, bottom: h - 18 };
  let max = 0;
  for (const points of panel.series.values()) {
    for (const [, v] of points) if (v !== null && v > max) max = v;
  }
  max = max > 0 ? max * 1.1 : 1;
  // Shares read best on a 0–100 % axis once they are large.
  if (panel.unit === 'ratio' && max > 0.5) max = 1;
  const t0 = now - state.range * 1000;
  const x = (t) => box.left + (box.right - box.left) * (t - t0) / (now - t0);
  const y = (v) => box.bottom - (box.bottom - box.top) * v / max;
  return { ctx, w, h, box, max, t0, now, x, y };
}

function draw(panel) {
  const f = frame(panel);
  const { ctx, box } = f;
  ctx.clearRect(0, 0, f.w, f.h);
  ctx.font = '11px system-ui, sans-serif';
  ctx.fillStyle = '#667085';
  ctx.strokeStyle = '#e4e7ec';
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i += 1) {
    const v = (f.max / 4) * i;
    const yy = Math.round(f.y(v)) + 0.5;
    ctx.beginPath(); ctx.moveTo(box.left, yy); ctx.lineTo(box.right, yy); ctx.stroke();
    ctx.textAlign = 'right';
    ctx.fillText(format(v, panel.unit), box.left - 6, yy + 4);
  }
  ctx.textAlign = 'left';
  ctx.fillText(clock(f.t0), box.left, f.h - 4);
  ctx.textAlign = 'right';
  ctx.fillText(clock(f.now), box.right, f.h - 4);
  let count = 0;
  let i = 0;
  const legend = [];
  for (const [name, points] of panel.series) {
    const color = PALETTE[i % PALETTE.length];
    ctx.strokeStyle = color;
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    let pen = false;
    for (const [t, v] of points) {
      if (v === null) { pen = false; continue; }
      if (pen) ctx.lineTo(f.x(t), f.y(v)); else ctx.moveTo(f.x(t), f.y(v));
      pen = true;
      count += 1;
    }
    ctx.stroke();
    const item = el('span');
    item.append(el('i', `swatch-${i % PALETTE.length}`), document.createTextNode(name || 'value'));
    legend.push(item);
    i += 1;
  }
  if (!panel.series.size) {
    ctx.textAlign = 'center';
    ctx.fillStyle = '#667085';
    ctx.fillText('no data', (box.left + box.right) / 2, (box.top + box.bottom) / 2);
  }
  if (panel.hover !== null) {
    const xx = Math.round(f.x(panel.hover)) + 0.5;
    ctx.strokeStyle = '#1d2330';
    ctx.lineWidth = 1;
    ctx.beginPath(); ctx.moveTo(xx, box.top); ctx.lineTo(xx, box.bottom); ctx.stroke();
  }
  panel.canvas.dataset.points = String(count);
  panel.legend.replaceChildren(...legend);
}

function hover(panel, ev) {
  const f = frame(panel);
  const rect = panel.canvas.getBoundingClientRect();
  const px = ev.clientX - rect.left;
  const t = f.t0 + (px - f.box.left) / (f.box.right - f.box.left) * (f.now - f.t0);
  let best = null;
  for (const points of panel.series.values()) {
    for (const [pt] of points) if (best === null || Math.abs(pt - t) < Math.abs(best - t)) best = pt;
  }
  panel.hover = best;
  draw(panel);
  if (best === null) { hideTooltip(); return; }
  const lines = [clock(best)];
  for (const [name, points] of panel.series) {
    const hit = points.find(([pt]) => pt === best);
    if (hit) lines.push(`${name || 'value'}: ${format(hit[1], panel.unit)}`);
  }
  const tip = document.getElementById('tooltip');
  tip.textContent = lines.join('\n');
  tip.hidden = false;
  tip.style.left = `${Math.min(ev.clientX + 12, window.innerWidth - 220)}px`;
  tip.style.top = `${ev.clientY + 12}px`;
}

function hideTooltip() {
  document.getElementById('tooltip').hidden = true;
}

document.getElementById('ranges').addEventListener('click', (ev) => {
  const seconds = Number(ev.target.dataset && ev.target.dataset.range);
  if (seconds) setRange(seconds);
});
window.addEventListener('resize', () => { for (const p of state.panels.values()) draw(p); });
poll();
