//! Line numbers for YAML key paths.
//!
//! serde_yaml reports where the text fails to parse, but not where a value
//! that parsed was wrong. So this module walks the file once with a
//! position-aware parser and records the line of every key and list item
//! under its path (`routes[2].origin`).

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Lines of the keys and list items of one YAML document, by path.
#[derive(Debug, Default)]
pub struct Locations {
    lines: HashMap<String, usize>,
}

impl Locations {
    /// Parses `text` and records the line of every node. Text that does not
    /// parse yields whatever was recorded before the error.
    pub fn parse(text: &str) -> Self {
        let mut recorder = Recorder::default();
        let mut parser = Parser::new_from_str(text);
        // A syntax error is reported by serde_yaml with its own position.
        let _ = parser.load(&mut recorder, false);
        Self {
            lines: recorder.lines,
        }
    }

    /// Returns the line of `path`, or of its nearest recorded ancestor.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let mut path = path;
        loop {
            if let Some(line) = self.lines.get(path) {
                return Some(*line);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, next: usize },
}

#[derive(Default)]
struct Recorder {
    stack: Vec<Frame>,
    lines: HashMap<String, usize>,
}

impl Recorder {
    /// Returns the path of a node that starts now, or `None` when the node
    /// is a mapping key (which is recorded here).
    fn place_node(&mut self, key_text: Option<&str>, line: usize) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { path, next }) => {
                let item = format!("{path}[{next}]");
                *next += 1;
                self.lines.insert(item.clone(), line);
                Some(item)
            }
            Some(Frame::Map { path, key }) => match key.take() {
                Some(key) => Some(key),
                None => {
                    let name = key_text.unwrap_or("?");
                    let full = if path.is_empty() {
                        name.to_string()
                    } else {
                        format!("{path}.{name}")
                    };
                    self.lines.insert(full.clone(), line);
                    *key = Some(full);
                    None
                }
            },
        }
    }
}

impl MarkedEventReceiver for Recorder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        let line = mark.line();
        match event {
            Event::Scalar(text, ..) => {
                self.place_node(Some(&text), line);
            }
            Event::Alias(_) => {
                self.place_node(None, line);
            }
            Event::MappingStart(..) => {
                if let Some(path) = self.place_node(None, line) {
                    self.stack.push(Frame::Map { path, key: None });
                }
            }
            Event::SequenceStart(..) => {
                if let Some(path) = self.place_node(None, line) {
                    self.stack.push(Frame::Seq { path, next: 0 });
                }
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keys_and_items() {
        let text = "routes:\n  - name: a\n    hosts: [x, y]\n  - name: b\n    origin: o\n";
        let locations = Locations::parse(text);
        assert_eq!(locations.line_of("routes"), Some(1));
        assert_eq!(locations.line_of("routes[0]"), Some(2));
        assert_eq!(locations.line_of("routes[0].hosts"), Some(3));
        assert_eq!(locations.line_of("routes[1].origin"), Some(5));
        assert_eq!(locations.line_of("routes[1].missing"), Some(4));
    }
}
