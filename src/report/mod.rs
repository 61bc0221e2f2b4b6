//! The `eval --report` HTML/Markdown report with SVG figures (built in the evaluation issue).
