//! A bound on how deeply Cedar text nests, checked before cedar-policy sees the text.
//!
//! cedar-policy's parser is table-driven, but turning its syntax tree into policies, checking
//! them, evaluating them and dropping them all recurse, one stack frame (or several) per level.
//! A Policy holding `((((…))))` 10,000 deep overflowed a tokio worker's 2 MiB stack, and an
//! overflow aborts the whole process. Cedar guards its type checker and evaluator against that,
//! not the rest.
//!
//! Two things nest, at very different costs (measured with `examples/cedar_depth.rs`, debug
//! build, per level: the parse, the schema check, one evaluation and the drop):
//! - *nesting*: brackets `(` `[` `{`, `if`, and unary `!` / `-`. A level costs up to ~15 KiB
//!   (a record in a record); 2 MiB holds about 140. [`MAX_NESTING`] is 32 (~470 KiB).
//! - *chains*: every binary operator, `.` access and keyword operator (`in`, `has`, `like`,
//!   `is`), which Cedar folds into one tree level each, without a bracket: `1+1+…+1`. A level
//!   costs ~64 bytes; 2 MiB holds about 32,000. [`MAX_CHAIN`] is 4096 (~256 KiB), counted along
//!   the deepest path: the operators of an expression plus those of every expression around it.
//!
//! A policy at both limits needs under half of a tokio worker's stack (tested on a 1 MiB
//! thread). The scanner reads the text once, left to right, with no recursion and memory
//! bounded by the limits; it skips string literals and `//` comments, and over-counts rather
//! than under-counts (every operator of an expression counts toward the chains inside it).

/// Deepest nesting of brackets, `if`s and unary operators accepted in a Policy's Cedar text.
pub const MAX_NESTING: u32 = 32;

/// Most operators accepted along one path of an expression tree (see the module's docs).
pub const MAX_CHAIN: u32 = 4096;

/// Which limit the text goes past, and at which byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TooDeep {
    Nesting { offset: usize },
    Chain { offset: usize },
}

impl TooDeep {
    pub fn offset(self) -> usize {
        match self {
            TooDeep::Nesting { offset } | TooDeep::Chain { offset } => offset,
        }
    }

    /// What is wrong and what to do, without quoting the text.
    pub fn message(self) -> String {
        match self {
            TooDeep::Nesting { .. } => format!(
                "nesting deeper than {MAX_NESTING} (each bracket, `if` and unary `!`/`-` is a \
                 level); write the condition flatter or split it into several policies"
            ),
            TooDeep::Chain { .. } => format!(
                "more than {MAX_CHAIN} operators chained in one expression (each `&&`, `+`, `.`, \
                 `in`, ... counts, with those of the expressions around it); split the \
                 condition into several policies"
            ),
        }
    }
}

/// One open bracket (the whole text is the outermost one).
#[derive(Clone, Copy, Default)]
struct Frame {
    /// Its nesting level.
    nesting: u32,
    /// `if`s opened in it since its last `,` (an `if`'s branches run to the end of its element).
    ifs: u32,
    /// Operators in its current element (since its last `,`) so far.
    ops: u32,
    /// The largest chain of a bracket closed inside its current element.
    child: u32,
    /// The largest chain of its earlier elements (siblings are side by side, not stacked).
    done: u32,
}

impl Frame {
    fn chain(&self) -> u32 {
        self.done.max(self.ops.saturating_add(self.child))
    }
}

struct Scanner {
    stack: Vec<Frame>,
    /// Sum of `ops + 1` over the frames below the top one (their operators are above whatever
    /// is in the top frame, in the tree Cedar builds).
    below: u32,
    /// Unary operators waiting for their operand.
    unary: u32,
    /// The previous token ends an operand, so a `-` after it is binary.
    after_operand: bool,
}

impl Scanner {
    fn top(&mut self) -> &mut Frame {
        // The outermost frame is never popped; `close` keeps at least one.
        if self.stack.is_empty() {
            self.stack.push(Frame::default());
        }
        let last = self.stack.len() - 1;
        &mut self.stack[last]
    }

    fn nesting(&mut self) -> u32 {
        let unary = self.unary;
        let t = self.top();
        t.nesting.saturating_add(t.ifs).saturating_add(unary)
    }

    fn check_nesting(&mut self, offset: usize) -> Result<(), TooDeep> {
        if self.nesting() > MAX_NESTING {
            return Err(TooDeep::Nesting { offset });
        }
        Ok(())
    }

    fn chain(&mut self) -> u32 {
        let below = self.below;
        below.saturating_add(self.top().chain()).saturating_add(1)
    }

    fn operator(&mut self, offset: usize) -> Result<(), TooDeep> {
        let t = self.top();
        t.ops = t.ops.saturating_add(1);
        self.after_operand = false;
        if self.chain() > MAX_CHAIN {
            return Err(TooDeep::Chain { offset });
        }
        Ok(())
    }

    fn operand(&mut self) {
        self.unary = 0;
        self.after_operand = true;
    }

    fn open(&mut self, offset: usize) -> Result<(), TooDeep> {
        let nesting = self.nesting().saturating_add(1);
        if nesting > MAX_NESTING {
            return Err(TooDeep::Nesting { offset });
        }
        let ops = self.top().ops;
        self.below = self.below.saturating_add(ops).saturating_add(1);
        self.stack.push(Frame {
            nesting,
            ..Frame::default()
        });
        self.unary = 0;
        self.after_operand = false;
        if self.chain() > MAX_CHAIN {
            return Err(TooDeep::Chain { offset });
        }
        Ok(())
    }

    fn close(&mut self) {
        // An unbalanced closer is Cedar's to report.
        if self.stack.len() > 1
            && let Some(f) = self.stack.pop()
        {
            let chain = f.chain().saturating_add(1);
            let t = self.top();
            t.child = t.child.max(chain);
            let ops = t.ops;
            self.below = self.below.saturating_sub(ops.saturating_add(1));
        }
        self.operand();
    }
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Checks `text` against [`MAX_NESTING`] and [`MAX_CHAIN`]. Text that is not valid Cedar is
/// scanned all the same (Cedar reports what is wrong with it afterwards).
pub fn check(text: &str) -> Result<(), TooDeep> {
    let b = text.as_bytes();
    let mut s = Scanner {
        stack: vec![Frame::default()],
        below: 0,
        unary: 0,
        after_operand: false,
    };
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let next = b.get(i + 1).copied();
        let start = i;
        i += 1;
        match c {
            b'/' if next == Some(b'/') => {
                while b.get(i).is_some_and(|&c| c != b'\n') {
                    i += 1;
                }
            }
            b'"' => {
                while let Some(&c) = b.get(i) {
                    i += 1;
                    match c {
                        b'\\' => i += 1,
                        b'"' => break,
                        _ => {}
                    }
                }
                s.operand();
            }
            b'(' | b'[' | b'{' => s.open(start)?,
            b')' | b']' | b'}' => s.close(),
            b',' => {
                let t = s.top();
                *t = Frame {
                    nesting: t.nesting,
                    done: t.chain(),
                    ..Frame::default()
                };
                s.unary = 0;
                s.after_operand = false;
            }
            b';' => {
                if s.stack.len() == 1 {
                    *s.top() = Frame::default();
                }
                s.unary = 0;
                s.after_operand = false;
            }
            b':' => {
                // `::` in a name, or a record's `key:`; neither nests.
                if next == Some(b':') {
                    i += 1;
                }
                s.after_operand = false;
            }
            b'!' if next != Some(b'=') => {
                s.unary = s.unary.saturating_add(1);
                s.check_nesting(start)?;
                s.operator(start)?;
            }
            b'-' if !s.after_operand => {
                s.unary = s.unary.saturating_add(1);
                s.check_nesting(start)?;
                s.operator(start)?;
            }
            b'&' | b'|' | b'=' | b'!' | b'<' | b'>' => {
                // Two-character operators (`&&`, `||`, `==`, `!=`, `<=`, `>=`) are one.
                if matches!(
                    (c, next),
                    (b'&', Some(b'&')) | (b'|', Some(b'|')) | (_, Some(b'='))
                ) {
                    i += 1;
                }
                s.operator(start)?;
            }
            b'+' | b'-' | b'*' | b'/' | b'%' | b'.' => s.operator(start)?,
            c if is_ident_start(c) => {
                while b.get(i).is_some_and(|&c| is_ident(c)) {
                    i += 1;
                }
                match &b[start..i] {
                    b"if" => {
                        let t = s.top();
                        t.ifs = t.ifs.saturating_add(1);
                        s.check_nesting(start)?;
                        s.operator(start)?;
                    }
                    b"in" | b"has" | b"like" | b"is" | b"when" | b"unless" => {
                        s.operator(start)?;
                    }
                    b"then" | b"else" => {
                        s.unary = 0;
                        s.after_operand = false;
                    }
                    _ => s.operand(),
                }
            }
            c if c.is_ascii_digit() => {
                while b.get(i).is_some_and(|&c| c.is_ascii_digit()) {
                    i += 1;
                }
                s.operand();
            }
            // Whitespace, `@`, `?`, and bytes Cedar will refuse.
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
