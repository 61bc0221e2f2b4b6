//! Progress bars on a terminal, nothing when output is piped (indicatif hides itself when
//! stderr is not a terminal).

use indicatif::{ProgressBar, ProgressStyle};

pub fn bar(len: u64, what: &str) -> ProgressBar {
    let b = ProgressBar::new(len);
    let style = ProgressStyle::with_template("{msg:>14} [{bar:32}] {pos}/{len} {elapsed_precise}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    b.set_style(style);
    b.set_message(what.to_string());
    b
}

/// Show `done` of `total` under `what` (the total may only be known once work starts).
pub fn show(
    bar: &ProgressBar,
    what: impl Into<std::borrow::Cow<'static, str>>,
    done: usize,
    total: usize,
) {
    bar.set_message(what);
    bar.set_length(total as u64);
    bar.set_position(done as u64);
}
