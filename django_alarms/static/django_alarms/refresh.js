/* The overview refreshes itself when asked: the operator picks an interval (remembered in this
 * browser), and every so often the page's content is fetched again and swapped in place, so
 * the admin around it (the sidebar, its scroll, an open filter) is not reloaded. Nothing
 * happens while the tab is hidden, and the chart bars stay links: the content is the page's own
 * HTML, rendered by the server. */
(function () {
  "use strict";
  var KEY = "django_alarms.overview.refresh";
  var timer = null;

  function select() {
    return document.getElementById("alarms-refresh");
  }

  function schedule(seconds) {
    if (timer !== null) {
      window.clearTimeout(timer);
      timer = null;
    }
    if (seconds > 0) {
      timer = window.setTimeout(refresh, seconds * 1000);
    }
  }

  function chosen() {
    var field = select();
    return field ? parseInt(field.value, 10) || 0 : 0;
  }

  function refresh() {
    timer = null;
    if (document.hidden) {
      schedule(chosen());
      return;
    }
    fetch(window.location.href, {credentials: "same-origin", headers: {"X-Requested-With": "fetch"}})
      .then(function (response) {
        if (!response.ok) {
          throw new Error(response.status);
        }
        return response.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("content-main");
        var current = document.getElementById("content-main");
        if (fresh && current) {
          var seconds = chosen();
          current.replaceWith(fresh);
          bind(seconds);
        }
      })
      .catch(function () {
        var status = document.getElementById("alarms-refresh-status");
        if (status) {
          status.textContent = status.dataset.failed || "";
        }
      })
      .finally(function () {
        schedule(chosen());
      });
  }

  function bind(seconds) {
    var field = select();
    if (!field) {
      return;
    }
    field.value = String(seconds);
    field.addEventListener("change", function () {
      var value = chosen();
      try {
        window.localStorage.setItem(KEY, String(value));
      } catch (ignored) {}
      schedule(value);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var stored = 0;
    try {
      stored = parseInt(window.localStorage.getItem(KEY), 10) || 0;
    } catch (ignored) {}
    var field = select();
    if (field && !field.querySelector('option[value="' + stored + '"]')) {
      stored = 0;
    }
    bind(stored);
    schedule(stored);
  });
})();
