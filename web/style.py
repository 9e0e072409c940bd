"""The page's own styles: messages, the headline, the model comparison, and charts that follow the dark theme."""

CSS = """
#descry-message:empty, #descry-message > div:empty { display: none; }
.descry-message { padding: 0.55em 0.8em; border-radius: 8px; border-left: 4px solid; margin: 0; line-height: 1.4; }
.descry-error { border-color: #c62828; background: rgba(198, 40, 40, 0.10); }
.descry-info { border-color: #1f6fb2; background: rgba(31, 111, 178, 0.10); }
.descry-done { border-color: #2e7d32; background: rgba(46, 125, 50, 0.10); }
.descry-headline { font-size: 1.15rem; line-height: 1.5; }
.descry-answer { font-size: 1.55rem; font-weight: 700; }
.descry-versus { color: var(--body-text-color-subdued); }
.descry-details { color: var(--body-text-color-subdued); font-size: 0.85rem; margin-top: 0.2em; }
.descry-status { min-height: 1.5em; }
.descry-compare { display: flex; flex-wrap: wrap; gap: 1em; }
.descry-model { flex: 1 1 240px; }
.descry-model-name { font-weight: 700; }
/* Charts have transparent backgrounds; in dark mode their own text and grid follow the page. */
.dark .js-plotly-plot g[class$="tick"] text, .dark .js-plotly-plot .g-gtitle text,
.dark .js-plotly-plot .g-xtitle text, .dark .js-plotly-plot .g-ytitle text, .dark .js-plotly-plot .legendtext {
    fill: var(--body-text-color) !important;
}
.dark .js-plotly-plot .gridlayer path, .dark .js-plotly-plot .zerolinelayer path {
    stroke: rgba(255, 255, 255, 0.18) !important;
}
"""
