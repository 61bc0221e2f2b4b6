//! See DESIGN.md; this stage is built in a later issue.
