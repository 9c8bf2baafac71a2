// Comfort only; the form works without it. Hides items whose display condition is not met and
// keeps a draft of the answers in this browser, so a reload does not lose them.
(function () {
  var form = document.getElementById('survey-form');
  if (!form) return;
  // the display conditions, as data on the form (the CSP allows no inline script)
  var conditions = JSON.parse(form.getAttribute('data-conditions') || '{}');
  var draftKey = form.getAttribute('data-draft-key');

  function answerOf(id) {
    var inputs = form.querySelectorAll('[name="' + id + '"]');
    var values = [];
    inputs.forEach(function (el) {
      if ((el.type === 'radio' || el.type === 'checkbox')) { if (el.checked) values.push(el.value); }
      else if (el.value !== '') values.push(el.value);
    });
    if (!values.length) return null;
    var multi = inputs.length && inputs[0].type === 'checkbox';
    return multi ? values : values[0];
  }

  function holds(c, answer) {
    if (answer === null) return false;
    var list = Array.isArray(answer) ? answer : [answer];
    if ('equals' in c) return !Array.isArray(answer) && String(answer) === String(c.equals);
    if ('any_of' in c) return list.some(function (v) { return c.any_of.map(String).indexOf(String(v)) >= 0; });
    if ('includes' in c) return Array.isArray(answer) && list.indexOf(String(c.includes)) >= 0;
    var n = Number(answer);
    if (isNaN(n)) return false;
    if ('gt' in c) return n > c.gt;
    if ('gte' in c) return n >= c.gte;
    if ('lt' in c) return n < c.lt;
    if ('lte' in c) return n <= c.lte;
    return false;
  }

  function refresh() {
    Object.keys(conditions).forEach(function (id) {
      var box = document.getElementById('item-' + id);
      var visible = holds(conditions[id], answerOf(conditions[id].item));
      box.hidden = !visible;
      box.querySelectorAll('input, textarea').forEach(function (el) { el.disabled = !visible; });
    });
  }

  function saveDraft() {
    var data = {};
    new FormData(form).forEach(function (v, k) {
      if (k === 'csrf_token' || k === 'idempotency_key') return;
      (data[k] = data[k] || []).push(v);
    });
    try { localStorage.setItem(draftKey, JSON.stringify(data)); } catch (e) {}
  }

  function restoreDraft() {
    var raw = null;
    try { raw = localStorage.getItem(draftKey); } catch (e) {}
    if (!raw) return;
    var data = JSON.parse(raw);
    Object.keys(data).forEach(function (k) {
      form.querySelectorAll('[name="' + k + '"]').forEach(function (el) {
        if (el.type === 'radio' || el.type === 'checkbox') el.checked = data[k].indexOf(el.value) >= 0;
        else if (!el.value) el.value = data[k][0];
      });
    });
  }

  restoreDraft();
  refresh();
  form.addEventListener('change', function () { refresh(); saveDraft(); });
  form.addEventListener('input', saveDraft);
  form.addEventListener('submit', function () {
    try { localStorage.removeItem(draftKey); } catch (e) {}
  });
  var summary = document.getElementById('error-summary');
  if (summary) summary.focus();
})();
