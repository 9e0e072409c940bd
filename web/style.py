"""The page's own styles: the floating message, the headline, warnings, the phone layout, and dark-mode charts."""

CSS = """
/* Messages float at the bottom of the window, so that they are in view whatever the visitor clicked. */
#descry-message { position: fixed; right: 16px; bottom: 16px; z-index: 1000; width: min(560px, calc(100vw - 32px)); }
#descry-message:empty, #descry-message > div:empty { display: none; }
#descry-stale:not(:has(.descry-stale)) { display: none; }  /* takes no room until there is something stale */
.descry-message {
    display: flex; gap: 0.6em; align-items: flex-start; padding: 0.65em 0.8em; border-radius: 8px;
    border-left: 5px solid; margin: 0; line-height: 1.4; box-shadow: 0 4px 18px rgba(0, 0, 0, 0.22);
    background: var(--background-fill-primary); color: var(--body-text-color);
}
.descry-message > span { flex: 1; }
.descry-dismissed { display: none !important; }
.descry-dismiss {
    border: none; background: transparent; color: var(--body-text-color-subdued); cursor: pointer;
    font-size: 1.3rem; line-height: 1; padding: 0 0.2em;
}
.descry-error {
    border-color: #c62828; background-image: linear-gradient(rgba(198, 40, 40, 0.12), rgba(198, 40, 40, 0.12));
}
.descry-info {
    border-color: #1f6fb2; background-image: linear-gradient(rgba(31, 111, 178, 0.12), rgba(31, 111, 178, 0.12));
}
.descry-done {
    border-color: #2e7d32; background-image: linear-gradient(rgba(46, 125, 50, 0.12), rgba(46, 125, 50, 0.12));
}
.descry-headline { font-size: 1.15rem; line-height: 1.5; }
.descry-answer { font-size: 1.55rem; font-weight: 700; }
.descry-unsure { font-size: 1.35rem; font-weight: 500; font-style: italic; }
.dark .descry-answer { filter: brightness(1.25); }
.descry-versus { color: var(--body-text-color-subdued); }
.descry-details { color: var(--body-text-color-subdued); font-size: 0.85rem; margin-top: 0.2em; }
.descry-warning, .descry-stale {
    margin-top: 0.4em; padding: 0.45em 0.7em; border-radius: 6px; border-left: 4px solid #b7791f;
    background: rgba(214, 158, 46, 0.14); font-size: 0.9rem;
}
.descry-setup {
    padding: 0.8em 1em; border-radius: 8px; border-left: 5px solid #c62828; background: rgba(198, 40, 40, 0.08);
}
.descry-setup-title { font-weight: 700; font-size: 1.1rem; margin-bottom: 0.3em; }
.descry-setup ol { margin: 0.5em 0 0 1.2em; }
.descry-status { min-height: 1.5em; }
.descry-compare { display: flex; flex-wrap: wrap; gap: 1em; }
.descry-model { flex: 1 1 240px; }
.descry-model-name { font-weight: 700; }
/* Gallery captions say the whole "true → predicted", on as many lines as they need. */
#eval-gallery .caption-label { white-space: normal; max-width: calc(100% - 8px); text-overflow: clip; }
/* Tables scroll sideways rather than hide columns. */
#eval-metrics .table-wrap, #eval-metrics table { overflow-x: auto; }
/* On a touch screen or a phone plotly's toolbar would sit over every chart's title. */
@media (hover: none), (max-width: 720px) { .js-plotly-plot .modebar-container { display: none !important; } }
/* On a phone or a narrow tablet the answer comes first: image and classes, then the headline and charts,
   then the editor. Below 768 px Gradio's page is too narrow for the two columns side by side (they would wrap,
   the results under the editor and examples); from 768 px they stay side by side and never wrap. */
@media (min-width: 768px) { #descry-explain { flex-wrap: nowrap; } }
@media (max-width: 767px) {
    #descry-explain { flex-direction: column; }
    #descry-inputs { display: contents; }
    #descry-image { order: 1; }
    #descry-inputs > .form:has(#descry-classes) { order: 2; }  /* Gradio wraps text fields in a form */
    #descry-results { order: 3; }
    #descry-editor { order: 4; }
    #descry-inputs > .form:has(#descry-link) { order: 5; }
    #descry-examples { order: 6; }
}
/* Charts have transparent backgrounds; in dark mode their own text and grid follow the page. */
.dark .js-plotly-plot g[class$="tick"] text, .dark .js-plotly-plot .g-gtitle text,
.dark .js-plotly-plot .g-xtitle text, .dark .js-plotly-plot .g-ytitle text, .dark .js-plotly-plot .legendtext {
    fill: var(--body-text-color) !important;
}
.dark .js-plotly-plot .gridlayer path, .dark .js-plotly-plot .zerolinelayer path {
    stroke: rgba(255, 255, 255, 0.18) !important;
}
"""
