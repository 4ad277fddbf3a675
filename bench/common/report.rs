//! Percentiles and Markdown tables.

/// The `p`-th percentile (0–100, nearest rank) of `values`; NaN when empty.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// A Markdown table being built.
pub struct Table {
    text: String,
}

impl Table {
    /// A table with these column titles.
    pub fn new(columns: &[&str]) -> Table {
        let mut text = format!("| {} |\n|", columns.join(" | "));
        for _ in columns {
            text.push_str("---|");
        }
        text.push('\n');
        Table { text }
    }

    /// Appends a row.
    pub fn row(&mut self, cells: &[String]) {
        self.text.push_str(&format!("| {} |\n", cells.join(" | ")));
    }

    /// The Markdown.
    pub fn render(&self) -> &str {
        &self.text
    }
}

/// `12.3` → `"12.3"`, NaN → `"–"`.
pub fn num(x: f64, decimals: usize) -> String {
    if x.is_finite() {
        format!("{x:.decimals$}")
    } else {
        "–".into()
    }
}
