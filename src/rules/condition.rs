//! The condition language of rules: a hand-written lexer and recursive-descent parser, the
//! AST, its canonical text form and its evaluation on one clip.
//!
//! ```text
//! condition  := or
//! or         := and ("or" and)*
//! and        := not ("and" not)*
//! not        := "not" not | primary
//! primary    := "(" or ")" | operand cmp operand
//! operand    := identifier | number          (number: -1, 0.5, -.25, 1e-3)
//! cmp        := "<" | "<=" | ">" | ">=" | "==" | "!="
//! ```
//!
//! Identifiers: an evidence feature (`hnr_db`), its z-score (`hnr_db_z`), the acoustic
//! probability of a label (`p_angry`) or `margin` (top-1 minus top-2 acoustic probability).
//! Keywords are case-insensitive.
//!
//! **Absent values:** a comparison with an operand that has no value on the clip (a feature
//! the extractor could not measure, a z-score without a baseline, a NaN) is *false*. So
//! `hnr_db_z < -1` and `hnr_db_z >= -1` are both false on a clip without HNR, and
//! `not (hnr_db_z < -1)` is *true* there: write the positive form of a condition when
//! absence should not fire the rule.

use std::fmt;

use crate::{Evidence, Probs};

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CompareOp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl CompareOp {
    pub fn symbol(self) -> &'static str {
        match self {
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
            CompareOp::Eq => "==",
            CompareOp::Ne => "!=",
        }
    }

    /// `==` and `!=` compare exactly; they are meant for counts such as `f0_rise_count`.
    pub fn holds(self, a: f64, b: f64) -> bool {
        match self {
            CompareOp::Lt => a < b,
            CompareOp::Le => a <= b,
            CompareOp::Gt => a > b,
            CompareOp::Ge => a >= b,
            CompareOp::Eq => a == b,
            CompareOp::Ne => a != b,
        }
    }
}

/// One side of a comparison.
#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    Number(f64),
    /// An evidence name as `Evidence::get` takes it: `hnr_db` or `hnr_db_z`.
    Feature(String),
    /// `p_<label>`: the acoustic probability of that label.
    Prob(String),
    /// Top-1 minus top-2 acoustic probability.
    Margin,
}

impl Operand {
    fn from_identifier(name: &str) -> Operand {
        if name == "margin" {
            Operand::Margin
        } else if let Some(label) = name.strip_prefix("p_") {
            Operand::Prob(label.to_string())
        } else {
            Operand::Feature(name.to_string())
        }
    }

    /// The value on one clip; `None` when absent (see the module docs).
    pub fn value(&self, evidence: &Evidence, probs: &Probs) -> Option<f64> {
        let v = match self {
            Operand::Number(x) => Some(*x),
            Operand::Feature(name) => evidence.get(name),
            Operand::Prob(label) => probs.get(label).map(f64::from),
            Operand::Margin => (!probs.values.is_empty()).then(|| f64::from(probs.margin())),
        };
        v.filter(|x| x.is_finite())
    }
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // `{}` on f64 prints the shortest text that reads back to the same value.
            Operand::Number(x) => write!(f, "{x}"),
            Operand::Feature(name) => f.write_str(name),
            Operand::Prob(label) => write!(f, "p_{label}"),
            Operand::Margin => f.write_str("margin"),
        }
    }
}

/// The parsed condition of a rule.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    Compare {
        left: Operand,
        op: CompareOp,
        right: Operand,
    },
    And(Box<Condition>, Box<Condition>),
    Or(Box<Condition>, Box<Condition>),
    Not(Box<Condition>),
}

impl Condition {
    /// `feature op value`, the shape refinement stumps produce.
    pub fn compare(feature: &str, op: CompareOp, value: f64) -> Condition {
        Condition::Compare {
            left: Operand::from_identifier(feature),
            op,
            right: Operand::Number(value),
        }
    }

    pub fn and(self, other: Condition) -> Condition {
        Condition::And(Box::new(self), Box::new(other))
    }

    pub fn or(self, other: Condition) -> Condition {
        Condition::Or(Box::new(self), Box::new(other))
    }

    pub fn negate(self) -> Condition {
        Condition::Not(Box::new(self))
    }

    /// Whether the condition holds on a clip. Absent operands make their comparison false.
    pub fn evaluate(&self, evidence: &Evidence, probs: &Probs) -> bool {
        match self {
            Condition::Compare { left, op, right } => {
                match (left.value(evidence, probs), right.value(evidence, probs)) {
                    (Some(a), Some(b)) => op.holds(a, b),
                    _ => false,
                }
            }
            Condition::And(a, b) => a.evaluate(evidence, probs) && b.evaluate(evidence, probs),
            Condition::Or(a, b) => a.evaluate(evidence, probs) || b.evaluate(evidence, probs),
            Condition::Not(a) => !a.evaluate(evidence, probs),
        }
    }

    /// Every non-numeric operand, in order of appearance (with repeats).
    pub fn operands(&self) -> Vec<&Operand> {
        let mut out = Vec::new();
        self.collect_operands(&mut out);
        out
    }

    fn collect_operands<'a>(&'a self, out: &mut Vec<&'a Operand>) {
        match self {
            Condition::Compare { left, right, .. } => {
                out.extend(
                    [left, right]
                        .into_iter()
                        .filter(|o| !matches!(o, Operand::Number(_))),
                );
            }
            Condition::And(a, b) | Condition::Or(a, b) => {
                a.collect_operands(out);
                b.collect_operands(out);
            }
            Condition::Not(a) => a.collect_operands(out),
        }
    }

    /// Binding strength, for printing the fewest parentheses that keep the meaning.
    fn precedence(&self) -> u8 {
        match self {
            Condition::Or(..) => 1,
            Condition::And(..) => 2,
            Condition::Not(..) => 3,
            Condition::Compare { .. } => 4,
        }
    }

    fn write_child(&self, f: &mut fmt::Formatter<'_>, min_precedence: u8) -> fmt::Result {
        if self.precedence() < min_precedence {
            write!(f, "({self})")
        } else {
            write!(f, "{self}")
        }
    }
}

/// Canonical text: single spaces, lower-case keywords, parentheses only where needed
/// (`and`/`or` chains print left-nested, which is how the parser builds them).
impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Condition::Compare { left, op, right } => write!(f, "{left} {} {right}", op.symbol()),
            Condition::And(a, b) => {
                a.write_child(f, 2)?;
                f.write_str(" and ")?;
                b.write_child(f, 3)
            }
            Condition::Or(a, b) => {
                a.write_child(f, 1)?;
                f.write_str(" or ")?;
                b.write_child(f, 2)
            }
            Condition::Not(a) => {
                f.write_str("not ")?;
                a.write_child(f, 3)
            }
        }
    }
}

/// Where and why a condition failed to parse.
#[derive(Clone, Debug, PartialEq)]
pub struct ParseError {
    /// 1-based character column within the condition text.
    pub column: usize,
    /// The offending token as written, or `end of condition`.
    pub token: String,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq)]
enum TokenKind {
    Ident(String),
    Number(f64),
    Cmp(CompareOp),
    And,
    Or,
    Not,
    LParen,
    RParen,
    End,
}

#[derive(Clone, Debug)]
struct Token {
    kind: TokenKind,
    /// 1-based character column.
    column: usize,
    text: String,
}

impl Token {
    fn describe(&self) -> String {
        match self.kind {
            TokenKind::End => "end of condition".into(),
            _ => format!("'{}'", self.text),
        }
    }
}

fn lex(text: &str) -> Result<Vec<Token>, ParseError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let starts_number = c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
            || (c == '-'
                && chars
                    .get(i + 1)
                    .is_some_and(|d| d.is_ascii_digit() || *d == '.'));
        if starts_number {
            let start = i;
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            // Exponent: 1e-3, 2.5E4.
            if i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
                let mut j = i + 1;
                if j < chars.len() && (chars[j] == '+' || chars[j] == '-') {
                    j += 1;
                }
                if j < chars.len() && chars[j].is_ascii_digit() {
                    i = j;
                    while i < chars.len() && chars[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            // A number glued to letters (`1.5x`, `2hz`) is a typo, not two tokens.
            let mut end = i;
            while end < chars.len()
                && (chars[end].is_alphanumeric() || chars[end] == '_' || chars[end] == '.')
            {
                end += 1;
            }
            let word: String = chars[start..end].iter().collect();
            let value = if end == i {
                word.parse::<f64>().ok().filter(|v| v.is_finite())
            } else {
                None
            };
            match value {
                Some(v) => tokens.push(Token {
                    kind: TokenKind::Number(v),
                    column,
                    text: word,
                }),
                None => {
                    return Err(ParseError {
                        column,
                        token: format!("'{word}'"),
                        message: "not a number".into(),
                    })
                }
            }
            i = end;
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let kind = match word.to_ascii_lowercase().as_str() {
                "and" => TokenKind::And,
                "or" => TokenKind::Or,
                "not" => TokenKind::Not,
                _ => TokenKind::Ident(word.clone()),
            };
            tokens.push(Token {
                kind,
                column,
                text: word,
            });
            continue;
        }
        let next = chars.get(i + 1).copied();
        let (kind, len) = match (c, next) {
            ('(', _) => (TokenKind::LParen, 1),
            (')', _) => (TokenKind::RParen, 1),
            ('<', Some('=')) => (TokenKind::Cmp(CompareOp::Le), 2),
            ('>', Some('=')) => (TokenKind::Cmp(CompareOp::Ge), 2),
            ('=', Some('=')) => (TokenKind::Cmp(CompareOp::Eq), 2),
            ('!', Some('=')) => (TokenKind::Cmp(CompareOp::Ne), 2),
            ('<', _) => (TokenKind::Cmp(CompareOp::Lt), 1),
            ('>', _) => (TokenKind::Cmp(CompareOp::Gt), 1),
            _ => {
                let (token, message) = match (c, next) {
                    ('&', Some('&')) => {
                        ("&&".to_string(), "write 'and' instead of '&&'".to_string())
                    }
                    ('|', Some('|')) => {
                        ("||".to_string(), "write 'or' instead of '||'".to_string())
                    }
                    ('!', _) => ("!".to_string(), "write 'not' instead of '!'".to_string()),
                    ('=', _) => (
                        "=".to_string(),
                        "write '==' to compare for equality".to_string(),
                    ),
                    _ => (c.to_string(), "unexpected character".to_string()),
                };
                return Err(ParseError {
                    column,
                    token: format!("'{token}'"),
                    message,
                });
            }
        };
        tokens.push(Token {
            kind,
            column,
            text: chars[i..i + len].iter().collect(),
        });
        i += len;
    }
    tokens.push(Token {
        kind: TokenKind::End,
        column: chars.len() + 1,
        text: String::new(),
    });
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        // `lex` always ends the list with `End`, and `advance` never moves past it.
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn advance(&mut self) -> Token {
        let t = self.peek().clone();
        if t.kind != TokenKind::End {
            self.pos += 1;
        }
        t
    }

    fn error(token: &Token, message: impl Into<String>) -> ParseError {
        ParseError {
            column: token.column,
            token: token.describe(),
            message: message.into(),
        }
    }

    fn or(&mut self) -> Result<Condition, ParseError> {
        let mut left = self.and()?;
        while self.peek().kind == TokenKind::Or {
            self.advance();
            let right = self.and()?;
            left = left.or(right);
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Condition, ParseError> {
        let mut left = self.not()?;
        while self.peek().kind == TokenKind::And {
            self.advance();
            let right = self.not()?;
            left = left.and(right);
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Condition, ParseError> {
        if self.peek().kind == TokenKind::Not {
            self.advance();
            return Ok(self.not()?.negate());
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Condition, ParseError> {
        if self.peek().kind == TokenKind::LParen {
            let open = self.advance();
            let inner = self.or()?;
            let close = self.peek().clone();
            if close.kind != TokenKind::RParen {
                return Err(Self::error(
                    &close,
                    format!("expected ')' to close the '(' at column {}", open.column),
                ));
            }
            self.advance();
            return Ok(inner);
        }
        let left = self.operand("a feature name or a number")?;
        let op_token = self.advance();
        let TokenKind::Cmp(op) = op_token.kind else {
            return Err(Self::error(
                &op_token,
                "expected a comparison (<, <=, >, >=, ==, !=)",
            ));
        };
        let right = self.operand("a feature name or a number after the comparison")?;
        Ok(Condition::Compare { left, op, right })
    }

    fn operand(&mut self, expected: &str) -> Result<Operand, ParseError> {
        let token = self.advance();
        match token.kind {
            TokenKind::Number(v) => Ok(Operand::Number(v)),
            TokenKind::Ident(ref name) => Ok(Operand::from_identifier(name)),
            _ => Err(Self::error(&token, format!("expected {expected}"))),
        }
    }
}

/// Parses a condition. Identifiers are not checked here; see `rules::names::validate`.
pub fn parse(text: &str) -> Result<Condition, ParseError> {
    let tokens = lex(text)?;
    let mut parser = Parser { tokens, pos: 0 };
    if parser.peek().kind == TokenKind::End {
        return Err(Parser::error(parser.peek(), "the condition is empty"));
    }
    let condition = parser.or()?;
    let rest = parser.peek().clone();
    match rest.kind {
        TokenKind::End => Ok(condition),
        TokenKind::RParen => Err(Parser::error(&rest, "')' without a matching '('")),
        _ => Err(Parser::error(
            &rest,
            "expected 'and', 'or' or the end of the condition",
        )),
    }
}

impl std::str::FromStr for Condition {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_is_not_then_and_then_or() {
        let c = parse("a_z > 1 or b_z > 1 and not c_z > 1").unwrap();
        let expected = Condition::compare("a_z", CompareOp::Gt, 1.0).or(Condition::compare(
            "b_z",
            CompareOp::Gt,
            1.0,
        )
        .and(Condition::compare("c_z", CompareOp::Gt, 1.0).negate()));
        assert_eq!(c, expected);
        assert_eq!(c.to_string(), "a_z > 1 or b_z > 1 and not c_z > 1");
    }

    #[test]
    fn canonical_text_keeps_needed_parentheses_and_reparses() {
        for text in [
            "(a > 1 or b < -0.5) and c >= .25",
            "not (a > 1 and b <= 2)",
            "a > 1 and (b > 1 and c > 1)",
            "x_z != 1e-3",
        ] {
            let c = parse(text).unwrap();
            assert_eq!(parse(&c.to_string()).unwrap(), c, "{text} → {c}");
        }
        assert_eq!(
            parse("(a > 1 or b < -0.5) and c >= .25")
                .unwrap()
                .to_string(),
            "(a > 1 or b < -0.5) and c >= 0.25"
        );
        // Arithmetic is not part of the language.
        assert!(parse("p_angry - 0.5 > 1").is_err());
    }

    #[test]
    fn errors_point_at_the_offending_token() {
        let e = parse("(a > 1 and b < 2").unwrap_err();
        assert_eq!((e.column, e.token.as_str()), (17, "end of condition"));
        let e = parse("a > 1 and").unwrap_err();
        assert_eq!(e.token, "end of condition");
        let e = parse("a > 1 && b < 2").unwrap_err();
        assert_eq!((e.column, e.token.as_str()), (7, "'&&'"));
        let e = parse("a > 1.5x").unwrap_err();
        assert_eq!((e.column, e.token.as_str()), (5, "'1.5x'"));
        let e = parse("a > 1)").unwrap_err();
        assert_eq!(e.column, 6);
    }
}
