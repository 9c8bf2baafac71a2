// Comfort only: the time-zone <select> works without this file.
// 1. Where the page asks for it (data-detect), select the zone the browser reports, if listed
//    (Chromium reports some old names, e.g. Asia/Calcutta: each option lists its aliases).
// 2. Reveal a filter box that narrows the options to those matching every typed word.
(function () {
  var select = document.getElementById('timezone');
  if (!select) return;

  function fold(text) {
    return text.normalize('NFKD').replace(/[\u0300-\u036f]/g, '').toLowerCase();
  }

  function haystack(option) {
    return fold(option.text) + ' ' + (option.getAttribute('data-search') || '');
  }

  function optionFor(zone) {
    var wanted = fold(zone);
    for (var i = 0; i < select.options.length; i++) {
      var option = select.options[i];
      if (option.value === zone) return option;
    }
    for (var j = 0; j < select.options.length; j++) {
      var words = (select.options[j].getAttribute('data-search') || '').split(' ');
      if (words.indexOf(wanted) >= 0) return select.options[j];
    }
    return null;
  }

  if (select.getAttribute('data-detect') === '1') {
    try {
      var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
      var found = zone && optionFor(zone);
      if (found) select.value = found.value;
    } catch (e) { /* no Intl: the page's choice (UTC) stays */ }
  }

  var box = document.querySelector('.tz-filter');
  var input = document.getElementById('timezone-filter');
  var status = document.getElementById('timezone-filter-status');
  if (!box || !input) return;
  box.hidden = false;
  var all = Array.prototype.slice.call(select.options);

  function narrow() {
    var words = fold(input.value).split(/\s+/).filter(Boolean);
    var shown = all.filter(function (option) {
      var text = haystack(option);
      return words.every(function (w) { return text.indexOf(w) >= 0; });
    });
    var chosen = select.value;
    if (!words.length || !shown.length) {
      shown = all;  // nothing typed, or nothing matches: the whole list stays usable
    }
    while (select.firstChild) select.removeChild(select.firstChild);
    shown.forEach(function (option) { select.appendChild(option); });
    var stillThere = shown.some(function (option) { return option.value === chosen; });
    select.value = stillThere ? chosen : shown[0].value;
    if (!words.length) {
      status.textContent = '';
    } else if (shown === all) {
      status.textContent = input.getAttribute('data-none');
    } else {
      status.textContent = input.getAttribute('data-matches').replace('{count}', shown.length);
    }
  }

  input.addEventListener('input', narrow);
  input.addEventListener('keydown', function (event) {
    if (event.key === 'Enter') {  // choose from the list rather than send the form
      event.preventDefault();
      select.focus();
    }
  });
})();
