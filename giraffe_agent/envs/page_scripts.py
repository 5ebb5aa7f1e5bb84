"""JavaScript the browser environment runs in pages: timer tracking, the settle probe, the visible
elements (for scripted demonstrators and tests), choosing an option of a ``<select>``, and what
secret masking reads (the focused element, the texts and field values of a frame, boxes).

Boxes are ``[x, y, width, height]`` in CSS pixels of the frame's own viewport. Secret values are
never passed into a page: the page's texts come out and are compared in Python.
"""

__all__ = [
    "COLLECT_TEXTS_JS",
    "ELEMENTS_JS",
    "ELEMENT_BOXES_JS",
    "FOCUSED_JS",
    "FRAME_CONTENT_JS",
    "PROBE_JS",
    "SELECT_JS",
    "TEXT_BOXES_JS",
    "TIMER_INIT_JS",
]

TIMER_INIT_JS = """
(() => {
  if (window.__giraffeSettle) return;
  const horizon = %(horizon_ms)d;
  const pending = new Set();
  const nativeSet = window.setTimeout, nativeClear = window.clearTimeout;
  window.setTimeout = function setTimeout(handler, delay, ...args) {
    const ms = Number(delay) || 0;
    if (typeof handler !== 'function' || !(ms <= horizon)) return nativeSet.call(window, handler, delay, ...args);
    const id = nativeSet.call(window, function () { pending.delete(id); return handler.apply(this, args); }, delay);
    pending.add(id);
    return id;
  };
  window.clearTimeout = function clearTimeout(id) { pending.delete(id); return nativeClear.call(window, id); };
  Object.defineProperty(window, '__giraffeSettle', {value: Object.freeze({pending: () => pending.size})});
})();
"""

PROBE_JS = """
() => {
  const g = window.__giraffeSettle;
  let anims = 0;
  try {
    for (const a of document.getAnimations()) {
      if (a.playState === 'running' && isFinite(a.effect && a.effect.getComputedTiming().endTime)) anims++;
    }
  } catch (e) {}
  return {ready: document.readyState, timers: g ? g.pending() : 0, anims, sx: window.scrollX, sy: window.scrollY};
}
"""

ELEMENTS_JS = """
(maxText) => {
  const out = [];
  const vw = window.innerWidth, vh = window.innerHeight;
  const interactive = new Set(['input', 'textarea', 'select', 'button', 'a', 'label', 'summary']);
  const skip = new Set(['script', 'style', 'noscript', 'template', 'option', 'optgroup', 'head', 'title']);
  const clean = s => (s || '').replace(/\\s+/g, ' ').trim().slice(0, maxText);
  const ownText = el => Array.from(el.childNodes).some(n => n.nodeType === 3 && n.textContent.trim());
  for (const el of document.querySelectorAll('body *')) {
    const tag = el.tagName.toLowerCase();
    if (skip.has(tag)) continue;
    const role = el.getAttribute('role');
    if (!interactive.has(tag) && !role && !ownText(el)) continue;
    if (tag === 'input' && el.type === 'hidden') continue;
    const r = el.getBoundingClientRect();
    if (r.width <= 0 || r.height <= 0 || r.right <= 0 || r.bottom <= 0 || r.left >= vw || r.top >= vh) continue;
    if (el.checkVisibility && !el.checkVisibility({checkOpacity: true, checkVisibilityCSS: true})) continue;
    let text, value = null;
    if (tag === 'input' || tag === 'textarea') {
      value = (el.type === 'checkbox' || el.type === 'radio') ? String(el.checked) : el.value;
      text = el.placeholder || el.getAttribute('aria-label') || '';
    } else if (tag === 'select') {
      value = el.value;
      const o = el.selectedOptions[0];
      text = o ? o.label : '';
    } else {
      text = el.innerText || el.getAttribute('aria-label') || '';
    }
    const classes = typeof el.className === 'string' ? el.className : (el.getAttribute('class') || '');
    out.push({tag, text: clean(text), box: [r.left, r.top, r.width, r.height], id: el.id || '',
              classes: classes.trim(), value, focused: el === document.activeElement});
    if (out.length >= 5000) break;
  }
  return out;
}
"""

SELECT_JS = """
([x, y, wanted]) => {
  const el = document.elementFromPoint(x, y);
  if (!el) return {error: 'nothing'};
  let sel = el.closest('select');
  if (!sel) {
    const label = el.closest('label');
    if (label && label.control && label.control.tagName === 'SELECT') sel = label.control;
  }
  if (!sel) return {error: 'not-select', tag: el.tagName.toLowerCase()};
  const norm = s => (s || '').replace(/\\s+/g, ' ').trim();
  const opts = Array.from(sel.options);
  const target = norm(wanted);
  let i = opts.findIndex(o => norm(o.label) === target);
  if (i < 0) i = opts.findIndex(o => o.value === wanted);
  if (i < 0) i = opts.findIndex(o => norm(o.label).toLowerCase() === target.toLowerCase());
  if (i < 0) return {error: 'no-option', options: opts.slice(0, 30).map(o => norm(o.label))};
  if (sel.disabled || opts[i].disabled) return {error: 'disabled', label: norm(opts[i].label)};
  sel.focus();
  if (sel.multiple) { for (const o of opts) o.selected = false; }
  opts[i].selected = true;
  sel.dispatchEvent(new Event('input', {bubbles: true, composed: true}));
  sel.dispatchEvent(new Event('change', {bubbles: true}));
  return {label: norm(opts[i].label), value: opts[i].value};
}
"""

#: the element keyboard input goes to in this frame (through open shadow roots), or null when
#: no element other than the body has the focus
FOCUSED_JS = """
() => {
  let el = document.activeElement;
  while (el && el.shadowRoot && el.shadowRoot.activeElement) el = el.shadowRoot.activeElement;
  if (!el || el === document.body || el === document.documentElement) return null;
  return el;
}
"""

#: every text node and every field of the frame (through open shadow roots; not head, script,
#: style, template), in document order, as {nodes, texts, fields, over}: fields[i] is true for an
#: input, textarea or select (its value and placeholder); over: more than maxChars characters
COLLECT_TEXTS_JS = """
(maxChars) => {
  const nodes = [], texts = [], fields = [];
  let total = 0, over = false;
  const skip = new Set(['head', 'script', 'style', 'template', 'noscript']);
  const add = (node, text, field) => {
    if (!text) return;
    total += text.length;
    if (total > maxChars) { over = true; return; }
    nodes.push(node); texts.push(text); fields.push(field);
  };
  const filter = {acceptNode: n => n.nodeType === 1 && skip.has(n.localName) ? NodeFilter.FILTER_REJECT
                                                                               : NodeFilter.FILTER_ACCEPT};
  const visit = (root) => {
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_ELEMENT | NodeFilter.SHOW_TEXT, filter);
    for (let node = walker.nextNode(); node && !over; node = walker.nextNode()) {
      if (node.nodeType === 3) { add(node, node.data, false); continue; }
      const tag = node.localName;
      if (tag === 'input' || tag === 'textarea' || tag === 'select') {
        add(node, String(node.value || ''), true);
        add(node, String(node.placeholder || ''), true);
      }
      if (node.shadowRoot) visit(node.shadowRoot);
    }
  };
  if (document.documentElement) visit(document.documentElement);
  return {nodes, texts, fields, over};
}
"""

#: the boxes of the nodes at the given indices of a COLLECT_TEXTS_JS collection: a text node's
#: line boxes, an element's border box (nothing for a node no longer in the document)
TEXT_BOXES_JS = """
(c, indices) => indices.map(i => {
  const node = c.nodes[i];
  if (!node || !node.isConnected) return [];
  let rects;
  if (node.nodeType === 3) {
    const range = node.ownerDocument.createRange();
    range.selectNodeContents(node);
    rects = Array.from(range.getClientRects());
  } else {
    rects = [node.getBoundingClientRect()];
  }
  return rects.filter(r => r.width > 0 && r.height > 0).map(r => [r.left, r.top, r.width, r.height]);
})
"""

#: an element's border box and the line boxes of its contents (content that overflows it), or
#: nothing when it is no longer in the document
ELEMENT_BOXES_JS = """
(el) => {
  if (!el.isConnected) return [];
  const rects = [el.getBoundingClientRect()];
  const range = el.ownerDocument.createRange();
  range.selectNodeContents(el);
  for (const r of range.getClientRects()) rects.push(r);
  return rects.filter(r => r.width > 0 && r.height > 0).map(r => [r.left, r.top, r.width, r.height]);
}
"""

#: where a frame element's content box starts inside its border box, and its size:
#: [left, top, width, height], CSS px
FRAME_CONTENT_JS = """
(el) => {
  const s = getComputedStyle(el);
  const px = v => parseFloat(v) || 0;
  return [el.clientLeft + px(s.paddingLeft), el.clientTop + px(s.paddingTop),
          el.clientWidth - px(s.paddingLeft) - px(s.paddingRight),
          el.clientHeight - px(s.paddingTop) - px(s.paddingBottom)];
}
"""
