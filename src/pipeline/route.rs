//! Confidence routing: a clip goes to the reasoner when the acoustic model is not sure.

use crate::acoustic::model_dir::RoutingConfig;
use crate::Probs;

/// Route when the calibrated top probability is below `threshold` or the top-two margin is
/// below `margin`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Router {
    pub threshold: f32,
    pub margin: f32,
}

impl Router {
    pub fn from_config(cfg: &RoutingConfig) -> Self {
        Self {
            threshold: cfg.threshold,
            margin: cfg.margin,
        }
    }

    pub fn is_ambiguous(&self, p: &Probs) -> bool {
        p.argmax().1 < self.threshold || p.margin() < self.margin
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
        };
        assert!(!r.is_ambiguous(&Probs::new(&l, vec![0.8, 0.1, 0.1])));
        assert!(r.is_ambiguous(&Probs::new(&l, vec![0.6, 0.3, 0.1])));
        let r = Router {
            threshold: 0.0,
            margin: 0.5,
        };
        assert!(r.is_ambiguous(&Probs::new(&l, vec![0.7, 0.3, 0.0])));
    }
}
