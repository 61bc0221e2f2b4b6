//! Site calibration (`camxuc calibrate`): a new site (microphone, room, language) refits the
//! evidence baseline, the temperature and the routing threshold on a few dozen labelled clips,
//! without retraining the network. The previous files are kept as `*.prev`.

use std::path::Path;

use super::model_dir;
use super::temperature::{ece_at, fit_temperature, softmax_t};
use super::train::fit_routing;
use super::{AcousticError, AcousticModel};
use crate::clip::ClipAnalyser;
use crate::data::manifest::Manifest;
use crate::features::{Baseline, BaselineKind};

#[derive(Clone, Debug, PartialEq)]
pub struct SiteReport {
    pub n: usize,
    pub failed: Vec<String>,
    pub temperature_before: f32,
    pub temperature_after: f32,
    pub ece_before: f64,
    pub ece_after: f64,
    pub threshold_before: f32,
    pub threshold_after: f32,
}

/// Fewer labelled clips than this cannot say much about a site.
pub const MIN_SITE_CLIPS: usize = 12;

pub fn calibrate_site(
    model_dir: &Path,
    models_dir: &Path,
    manifest: &Path,
) -> Result<SiteReport, AcousticError> {
    let device = super::default_device();
    let mut model = AcousticModel::load(model_dir, models_dir, &device)?;
    let m = Manifest::load(manifest, &model.meta.labels)?;
    let mut an =
        ClipAnalyser::new(&model.meta.features).map_err(|source| AcousticError::Features {
            path: model_dir.into(),
            source,
        })?;
    let (mut clips, mut labels, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    for row in &m.rows {
        match an.analyse(&row.path) {
            Ok(c) => {
                clips.push(c);
                labels.push(model.meta.labels.index_of(&row.label).unwrap_or(0));
            }
            Err(e) => failed.push(e.to_string()),
        }
    }
    if clips.len() < MIN_SITE_CLIPS {
        return Err(AcousticError::Training {
            path: manifest.into(),
            message: format!(
                "site calibration needs at least {MIN_SITE_CLIPS} usable labelled clips, got {}",
                clips.len()
            ),
        });
    }
    let ece_before = ece_at(
        &model.logits(&mut clips.clone())?,
        &labels,
        model.meta.temperature,
    );
    // The site's own evidence baseline, then temperature and routing on the site's clips.
    let evidences: Vec<_> = clips.iter().map(|c| c.evidence.clone()).collect();
    model.meta.evidence_baseline = Baseline::fit(
        BaselineKind::Corpus(format!("site:{}", &m.data_hash()[..12])),
        &evidences,
    );
    let logits = model.logits(&mut clips)?;
    let temperature = fit_temperature(&logits, &labels);
    let probs: Vec<Vec<f32>> = logits.iter().map(|l| softmax_t(l, temperature)).collect();
    let mut routing = fit_routing(&probs, model.routing.target_route_fraction, &m.speakers());
    routing.fitted_on = format!(
        "site calibration on {}: {}",
        manifest.display(),
        routing.fitted_on
    );
    let report = SiteReport {
        n: clips.len(),
        failed,
        temperature_before: model.meta.temperature,
        temperature_after: temperature,
        ece_before,
        ece_after: ece_at(&logits, &labels, temperature),
        threshold_before: model.routing.threshold,
        threshold_after: routing.threshold,
    };
    model.meta.temperature = temperature;
    for f in [model_dir::META_FILE, model_dir::ROUTING_FILE] {
        model_dir::keep_previous(model_dir, f)?;
    }
    model_dir::write_meta(model_dir, &model.meta)?;
    model_dir::write_json(&model_dir.join(model_dir::ROUTING_FILE), &routing)?;
    Ok(report)
}
