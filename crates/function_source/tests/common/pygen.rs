//! A generator of random, mostly valid Python programs full of what the locator and the
//! factory builder must get right: nested defs, classes and lambdas, comprehensions,
//! decorators, defaults, annotations (multi-line too), `global`, private names, tabs,
//! non-ASCII text, strings that contain `lambda` and colons, several lambdas per line.
//!
//! Every decision reads one byte from the input, so proptest (shrinking a byte vector), a
//! fuzzer, or a seeded PRNG can all drive it. An exhausted input reads zeros, which always
//! picks the simplest option, so every input yields a finite program.
#![allow(dead_code)]

pub struct Choices<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Choices<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Choices { bytes, position: 0 }
    }

    fn byte(&mut self) -> u8 {
        let byte = self.bytes.get(self.position).copied().unwrap_or(0);
        self.position += 1;
        byte
    }

    /// A number below `n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        usize::from(self.byte()) % n
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    fn pick<'s>(&mut self, items: &[&'s str]) -> &'s str {
        items[self.below(items.len())]
    }
}

const VARIABLES: &[&str] = &["a", "b", "x", "k", "__p", "é", "self", "_"];
const FUNCTIONS: &[&str] = &["f", "g", "h", "__m", "ünï", "outer", "make"];
const CLASSES: &[&str] = &["C", "D", "_E", "__F"];
const INDENTS: &[&str] = &["    ", "\t", "  ", " "];
const STRINGS: &[&str] = &["'lambda: x'", "\"a:b\"", "'é # not a comment'", "'''multi\nline'''", "b'bytes'", "'ü'"];

/// A random program from `bytes`.
pub fn program(bytes: &[u8]) -> String {
    let mut choices = Choices::new(bytes);
    let mut out = String::new();
    let count = 1 + choices.below(5);
    for _ in 0..count {
        statement(&mut choices, &mut out, "", Context::Module, 0);
    }
    out
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    Module,
    Class,
    Function,
}

fn body(c: &mut Choices, out: &mut String, indent: &str, context: Context, depth: usize) {
    let inner = format!("{indent}{}", c.pick(INDENTS));
    let count = 1 + c.below(3);
    for _ in 0..count {
        statement(c, out, &inner, context, depth + 1);
    }
}

fn statement(c: &mut Choices, out: &mut String, indent: &str, context: Context, depth: usize) {
    let deep = depth >= 4;
    match c.below(if deep { 4 } else { 10 }) {
        0 => {
            let target = c.pick(VARIABLES);
            let value = expr(c, indent, depth);
            out.push_str(&format!("{indent}{target} = {value}\n"));
        }
        1 if context == Context::Function => {
            let value = expr(c, indent, depth);
            out.push_str(&format!("{indent}return {value}\n"));
        }
        2 => {
            let (first, second) = (expr(c, indent, depth), expr(c, indent, depth));
            out.push_str(&format!("{indent}{first}; {} = {second}\n", c.pick(VARIABLES)));
        }
        3 if c.chance(2) => out.push_str(&format!("{indent}# lambda: a comment\n\n{indent}pass\n")),
        4..=6 => function_def(c, out, indent, context, depth),
        7 => {
            let name = c.pick(CLASSES);
            let bases = if c.chance(2) { format!("({})", atom(c, indent, depth)) } else { String::new() };
            out.push_str(&format!("{indent}class {name}{bases}:\n"));
            body(c, out, indent, Context::Class, depth);
        }
        8 => {
            let condition = atom(c, indent, depth);
            out.push_str(&format!("{indent}if {condition}:\n"));
            body(c, out, indent, context, depth);
        }
        9 if context == Context::Function && c.chance(2) => {
            // A nested function declared global: CPython drops the enclosing qualname.
            let name = c.pick(FUNCTIONS);
            out.push_str(&format!("{indent}global {name}\n"));
            out.push_str(&format!("{indent}def {name}():\n"));
            body(c, out, indent, Context::Function, depth);
        }
        _ => out.push_str(&format!("{indent}pass\n")),
    }
}

fn function_def(c: &mut Choices, out: &mut String, indent: &str, _context: Context, depth: usize) {
    for _ in 0..c.below(3) {
        let decorator = match c.below(4) {
            0 => "(lambda f: f)".to_owned(),
            1 => format!("deco.attr({})", expr(c, indent, depth)),
            2 => format!("deco(\n{indent}    {},\n{indent})", expr(c, indent, depth)),
            _ => "deco".to_owned(),
        };
        out.push_str(&format!("{indent}@{decorator}\n"));
    }
    let is_async = c.chance(5);
    let name = c.pick(FUNCTIONS);
    let params = parameters(c, indent, depth, true);
    let returns = match c.below(4) {
        0 => format!(" -> {}", atom(c, indent, depth)),
        1 => format!(" -> Dict[\n{indent}    str, int\n{indent}]"),
        _ => String::new(),
    };
    let prefix = if is_async { "async " } else { "" };
    if c.chance(4) {
        // One-line body, possibly with a lambda on the header line.
        let value = expr(c, indent, depth);
        out.push_str(&format!("{indent}{prefix}def {name}({params}){returns}: return {value}\n"));
    } else {
        out.push_str(&format!("{indent}{prefix}def {name}({params}){returns}:\n"));
        body(c, out, indent, Context::Function, depth);
    }
}

/// A valid parameter list: unique names, defaults only on trailing positional parameters.
fn parameters(c: &mut Choices, indent: &str, depth: usize, annotated: bool) -> String {
    let mut names: Vec<&str> = Vec::new();
    for _ in 0..c.below(4) {
        let name = c.pick(VARIABLES);
        if !names.contains(&name) && name != "_" {
            names.push(name);
        }
    }
    let mut parts = Vec::new();
    let defaults_from = c.below(names.len() + 1);
    for (i, name) in names.iter().enumerate() {
        let annotation =
            if annotated && c.chance(3) { format!(": {}", atom(c, indent, depth + 2)) } else { String::new() };
        let default = if i >= defaults_from { format!(" = {}", expr(c, indent, depth + 2)) } else { String::new() };
        parts.push(format!("{name}{annotation}{default}"));
    }
    if c.chance(4) {
        parts.push("*args".to_owned());
    }
    if c.chance(4) {
        parts.push("**kwargs".to_owned());
    }
    parts.join(", ")
}

fn expr(c: &mut Choices, indent: &str, depth: usize) -> String {
    if depth >= 6 {
        return c.pick(&["1", "a", "None", "'s'"]).to_owned();
    }
    let d = depth + 1;
    match c.below(14) {
        0 => c.pick(VARIABLES).to_owned(),
        1 => c.pick(&["1", "-2", "3.5", "None", "...", "True"]).to_owned(),
        2 => c.pick(STRINGS).to_owned(),
        3..=5 => format!("lambda {}: {}", parameters(c, indent, d, false), expr(c, indent, d)),
        6 => format!("(lambda: {})", expr(c, indent, d)),
        7 => format!("f({}, key={})", expr(c, indent, d), expr(c, indent, d)),
        8 => format!("[{}, {}]", expr(c, indent, d), expr(c, indent, d)),
        9 => {
            let (open, close) = *[("[", "]"), ("{", "}"), ("(", ")")].get(c.below(3)).unwrap_or(&("[", "]"));
            let element = expr(c, indent, d);
            let target = c.pick(VARIABLES);
            let iterable = atom(c, indent, d);
            let condition = if c.chance(3) { format!(" if {}", atom(c, indent, d)) } else { String::new() };
            format!("{open}{element} for {target} in {iterable}{condition}{close}")
        }
        10 => format!("{{{}: {} for k in a}}", atom(c, indent, d), expr(c, indent, d)),
        11 => format!("(\n{indent}    {}\n{indent})", expr(c, indent, d)),
        12 => format!("f\"{{(lambda: {})()}}\"", c.pick(&["1", "a", "é"])),
        _ => format!("{} if {} else {}", atom(c, indent, d), atom(c, indent, d), atom(c, indent, d)),
    }
}

/// An expression usable as an operand: anything but a name, number or string goes in
/// parentheses, so a lambda or conditional never swallows what follows it.
fn atom(c: &mut Choices, indent: &str, depth: usize) -> String {
    let e = expr(c, indent, depth);
    if e.chars().all(|ch| ch.is_alphanumeric() || ch == '_') {
        e
    } else {
        format!("({e})")
    }
}
