(function () {
  "use strict";
  // ast + the interpreter vega-embed bundles: no expression is compiled with Function, so the
  // page's Content-Security-Policy needs no 'unsafe-eval'; default styles come from style.css
  // (no injected <style>, so no 'unsafe-inline').
  var options = {actions: false, renderer: "svg", mode: "vega-lite", ast: true, defaultStyle: false,
                 tooltip: {disableDefaultStyle: true}};
  var pending = [];
  document.body.className += " js";  // shows the zoom hints (hidden for readers without JavaScript)
  document.querySelectorAll("div.vega[data-spec]").forEach(function (el) {
    var spec;
    try {
      spec = JSON.parse(document.getElementById(el.getAttribute("data-spec")).textContent);
    } catch (err) {
      el.textContent = "Chart data could not be read: " + err;
      el.className += " chart-error";
      console.error(err);
      return;
    }
    pending.push(vegaEmbed(el, spec, options).catch(function (err) {
      el.textContent = "Chart could not be drawn: " + err;
      el.className += " chart-error";
      console.error(err);
    }));
  });
  Promise.all(pending).then(function () { document.body.setAttribute("data-charts-ready", String(pending.length)); });
})();
