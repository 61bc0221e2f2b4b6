//! Confidence routing: a clip goes to the reasoner when the acoustic model is not sure.

use crate::acoustic::model_dir::RoutingConfig;
use crate::Probs;

/// Route when the calibrated top probability is below `threshold`, the top-two margin is
/// below `margin`, or the clip's unfamiliarity is above `unfamiliarity` (when both are known).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Router {
    pub threshold: f32,
    pub margin: f32,
    pub unfamiliarity: Option<f32>,
}

impl Router {
    pub fn from_config(cfg: &RoutingConfig) -> Self {
        Self {
            threshold: cfg.threshold,
            margin: cfg.margin,
            unfamiliarity: cfg.unfamiliarity_threshold,
        }
    }

    pub fn is_ambiguous(&self, p: &Probs, unfamiliarity: Option<f32>) -> bool {
        p.argmax().1 < self.threshold
            || p.margin() < self.margin
            || self.is_unfamiliar(unfamiliarity)
    }

    /// Whether a clip lies further from the training clips than the model's threshold.
    pub fn is_unfamiliar(&self, unfamiliarity: Option<f32>) -> bool {
        matches!((unfamiliarity, self.unfamiliarity), (Some(u), Some(t)) if u > t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LabelSet;

    #[test]
    fn routes_low_confidence_and_small_margins() {
        let l = LabelSet::default();
        let r = Router {
            threshold: 0.7,
            margin: 0.2,
            unfamiliarity: None,
        };
        assert!(!r.is_ambiguous(&Probs::new(&l, vec![0.8, 0.1, 0.1]), Some(9.0)));
        assert!(r.is_ambiguous(&Probs::new(&l, vec![0.6, 0.3, 0.1]), None));
        let r = Router {
            threshold: 0.0,
            margin: 0.5,
            unfamiliarity: Some(2.0),
        };
        assert!(r.is_ambiguous(&Probs::new(&l, vec![0.7, 0.3, 0.0]), None));
        // A confident clip far from the training clips is routed; a familiar one is kept.
        let sure = Probs::new(&l, vec![0.98, 0.01, 0.01]);
        assert!(r.is_ambiguous(&sure, Some(2.5)));
        assert!(!r.is_ambiguous(&sure, Some(1.0)));
        assert!(!r.is_ambiguous(&sure, None));
    }
}
