//! The sentences of the synthetic corpus: everyday Vietnamese, some leaning to a class.
//!
//! A clip's sentence is only partly tied to its label (see [`pick`]): with probability
//! [`OWN_CLASS_P`] it leans to the clip's own class, with [`OTHER_CLASS_P`] to another class,
//! otherwise it is neutral. So the words help (a call for help is more often panic) but never
//! give the answer alone — which is what a transcript experiment needs to be honest.

use rand::Rng;

/// Probability that a clip's sentence leans to its own class.
pub const OWN_CLASS_P: f64 = 0.35;
/// Probability that it leans to another class (chosen uniformly among the others).
pub const OTHER_CLASS_P: f64 = 0.10;

/// Calls for help, fear, urgency.
const PANIC: &[&str] = &[
    "Cứu tôi với!",
    "Có ai không, giúp tôi với!",
    "Cháy rồi, chạy đi!",
    "Trời ơi, làm ơn gọi cấp cứu!",
    "Đừng lại gần tôi!",
    "Nhanh lên, nó đang đuổi theo!",
    "Con tôi đâu rồi? Ai thấy con tôi không?",
    "Tôi sợ quá, làm sao bây giờ?",
    "Mở cửa ra, cho tôi ra ngoài!",
    "Gọi công an đi, nhanh lên!",
];

/// Complaints, insults, threats.
const ANGRY: &[&str] = &[
    "Anh làm cái trò gì vậy hả?",
    "Tôi đã nói bao nhiêu lần rồi!",
    "Đồ vô dụng, biến đi cho khuất mắt!",
    "Mày mà còn làm thế nữa thì biết tay tao!",
    "Im đi, tôi không muốn nghe nữa!",
    "Sao giờ này mới tới, để tôi chờ cả tiếng đồng hồ!",
    "Trả tiền lại cho tôi ngay!",
    "Đừng có nói dối tôi nữa!",
    "Thật là quá đáng!",
    "Cút ra khỏi nhà tôi!",
];

/// Reassuring, relaxed.
const CALM: &[&str] = &[
    "Không sao đâu, cứ từ từ thôi.",
    "Hôm nay trời mát, mình đi dạo một chút nhé.",
    "Cảm ơn anh, tôi ổn mà.",
    "Em cứ nghỉ ngơi đi, để đó chị làm.",
    "Mọi chuyện rồi sẽ ổn thôi.",
    "Chúng ta uống trà rồi nói chuyện nhé.",
    "Bà ngủ ngon nhé.",
    "Không vội đâu, con cứ ăn đi.",
];

/// Everyday sentences with no emotional lean.
const NEUTRAL: &[&str] = &[
    "Hôm nay là thứ hai.",
    "Tôi vừa đi chợ về.",
    "Chiều nay mấy giờ họp?",
    "Cái áo này giá bao nhiêu?",
    "Xe buýt số mười sẽ tới lúc tám giờ.",
    "Anh ấy đang ở ngoài cửa.",
    "Mai chúng ta đi Hà Nội.",
    "Tôi để chìa khóa trên bàn.",
    "Điện thoại của tôi hết pin rồi.",
    "Ai đang gọi vậy?",
    "Cơm đã nấu xong rồi.",
    "Tuần sau mẹ tôi về quê.",
    "Cửa hàng đóng cửa lúc chín giờ tối.",
    "Đường này đi ra bến xe.",
    "Chị có thấy cái túi màu đỏ không?",
    "Bây giờ là mười giờ sáng.",
    "Tôi sẽ gọi lại cho anh sau.",
    "Nó vẫn chưa về nhà.",
    "Ngày mai trời có mưa không?",
    "Mình gặp nhau ở quán cà phê nhé.",
];

/// Sentences leaning to a class, `None` for a label without a list.
pub fn leaning(label: &str) -> Option<&'static [&'static str]> {
    match label {
        "calm" => Some(CALM),
        "angry" => Some(ANGRY),
        "panic" => Some(PANIC),
        _ => None,
    }
}

/// A sentence for a clip of `label`, and what it leans to (a label or `neutral`).
pub fn pick<R: Rng>(label: &str, all_labels: &[String], rng: &mut R) -> (&'static str, String) {
    let u: f64 = rng.random();
    let others: Vec<&String> = all_labels
        .iter()
        .filter(|l| *l != label && leaning(l).is_some())
        .collect();
    let lean: Option<&str> = if u < OWN_CLASS_P {
        leaning(label).map(|_| label)
    } else if u < OWN_CLASS_P + OTHER_CLASS_P && !others.is_empty() {
        Some(others[rng.random_range(0..others.len())].as_str())
    } else {
        None
    };
    let (list, name) = match lean.and_then(|l| leaning(l).map(|s| (s, l))) {
        Some((s, l)) => (s, l.to_string()),
        None => (NEUTRAL, "neutral".to_string()),
    };
    (list[rng.random_range(0..list.len())], name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn sentences_lean_to_their_class_only_partly() {
        let labels: Vec<String> = ["calm", "angry", "panic"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let n = 6000;
        for label in &labels {
            let (mut own, mut other) = (0, 0);
            for _ in 0..n {
                let (text, lean) = pick(label, &labels, &mut rng);
                assert!(!text.is_empty());
                if &lean == label {
                    own += 1;
                } else if lean != "neutral" {
                    other += 1;
                }
            }
            let (own, other) = (own as f64 / n as f64, other as f64 / n as f64);
            assert!((own - OWN_CLASS_P).abs() < 0.03, "{label}: own {own}");
            assert!(
                (other - OTHER_CLASS_P).abs() < 0.02,
                "{label}: other {other}"
            );
        }
    }
}
