//! A small XML reader for EC2 query-protocol responses: elements, text, the five
//! predefined entities and numeric character references, comments, CDATA and the
//! XML declaration. Namespaces are kept as written and ignored by the lookups.
//! It builds a tree, which is fine for the few kilobytes an EC2 read returns, and it
//! never panics on bad input: it returns an error naming the byte offset.

use std::fmt;

/// An element with its children and its text (concatenated direct text content).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    /// Local name (any `prefix:` removed).
    pub name: String,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    /// The first child called `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every child called `name`.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// Follows a path of child names, e.g. `["launchTemplateData", "instanceType"]`.
    pub fn path(&self, names: &[&str]) -> Option<&Element> {
        names
            .iter()
            .try_fold(self, |element, name| element.child(name))
    }

    /// The trimmed text at a path, if present and not empty.
    pub fn text_at(&self, names: &[&str]) -> Option<&str> {
        self.path(names)
            .map(|e| e.text.trim())
            .filter(|t| !t.is_empty())
    }

    /// The first element called `name` anywhere below (depth first), itself included.
    pub fn find(&self, name: &str) -> Option<&Element> {
        if self.name == name {
            return Some(self);
        }
        self.children.iter().find_map(|c| c.find(name))
    }
}

/// Malformed XML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlError {
    pub offset: usize,
    pub message: &'static str,
}

impl fmt::Display for XmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed XML at byte {}: {}", self.offset, self.message)
    }
}

impl std::error::Error for XmlError {}

/// Parses a document and returns its root element.
pub fn parse(input: &str) -> Result<Element, XmlError> {
    let bytes = input.as_bytes();
    let err = |offset, message| XmlError { offset, message };
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'<' {
            let end = input[i..].find('<').map_or(bytes.len(), |n| i + n);
            let text = &input[i..end];
            match stack.last_mut() {
                Some(top) => top.text.push_str(&unescape(text).map_err(|m| err(i, m))?),
                None if text.trim().is_empty() => {}
                None => return Err(err(i, "text outside the root element")),
            }
            i = end;
            continue;
        }
        let rest = &input[i..];
        if rest.starts_with("<?") {
            i += rest.find("?>").ok_or(err(i, "unterminated declaration"))? + 2;
        } else if rest.starts_with("<!--") {
            i += rest.find("-->").ok_or(err(i, "unterminated comment"))? + 3;
        } else if rest.starts_with("<![CDATA[") {
            let end = rest.find("]]>").ok_or(err(i, "unterminated CDATA"))?;
            let top = stack
                .last_mut()
                .ok_or(err(i, "CDATA outside the root element"))?;
            top.text.push_str(&rest[9..end]);
            i += end + 3;
        } else if rest.starts_with("<!") {
            i += rest.find('>').ok_or(err(i, "unterminated doctype"))? + 1;
        } else if let Some(close) = rest.strip_prefix("</") {
            let end = close.find('>').ok_or(err(i, "unterminated end tag"))?;
            let name = local_name(close[..end].trim());
            let element = stack.pop().ok_or(err(i, "end tag without a start tag"))?;
            if element.name != name {
                return Err(err(i, "end tag does not match the start tag"));
            }
            match stack.last_mut() {
                Some(parent) => parent.children.push(element),
                None if root.is_none() => root = Some(element),
                None => return Err(err(i, "more than one root element")),
            }
            i += 2 + end + 1;
        } else {
            let end = find_tag_end(rest).ok_or(err(i, "unterminated start tag"))?;
            let inner = &rest[1..end];
            let self_closing = inner.ends_with('/');
            let inner = inner.trim_end_matches('/');
            let name_end = inner
                .find(|c: char| c.is_whitespace())
                .unwrap_or(inner.len());
            let name = local_name(&inner[..name_end]);
            if name.is_empty() {
                return Err(err(i, "start tag without a name"));
            }
            let element = Element {
                name: name.to_owned(),
                ..Element::default()
            };
            if self_closing {
                match stack.last_mut() {
                    Some(parent) => parent.children.push(element),
                    None if root.is_none() => root = Some(element),
                    None => return Err(err(i, "more than one root element")),
                }
            } else {
                if root.is_some() && stack.is_empty() {
                    return Err(err(i, "more than one root element"));
                }
                stack.push(element);
            }
            i += end + 1;
        }
    }
    if !stack.is_empty() {
        return Err(err(bytes.len(), "unclosed element"));
    }
    root.ok_or(err(0, "no root element"))
}

/// The end (`>`) of a start tag, skipping `>` inside quoted attribute values.
fn find_tag_end(tag: &str) -> Option<usize> {
    let mut quote = None;
    for (index, c) in tag.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return Some(index),
            _ => {}
        }
    }
    None
}

fn local_name(name: &str) -> &str {
    name.rsplit_once(':').map_or(name, |(_, local)| local)
}

fn unescape(text: &str) -> Result<String, &'static str> {
    if !text.contains('&') {
        return Ok(text.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let semi = after.find(';').ok_or("unterminated entity")?;
        let entity = &after[..semi];
        let c = match entity {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity
                    .strip_prefix("#x")
                    .or_else(|| entity.strip_prefix("#X"))
                {
                    u32::from_str_radix(hex, 16).map_err(|_| "bad character reference")?
                } else if let Some(dec) = entity.strip_prefix('#') {
                    dec.parse().map_err(|_| "bad character reference")?
                } else {
                    return Err("unknown entity");
                };
                char::from_u32(code).ok_or("bad character reference")?
            }
        };
        out.push(c);
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_ec2_response() {
        let doc = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeLaunchTemplateVersionsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
    <requestId>abc</requestId>
    <launchTemplateVersionSet>
        <item>
            <launchTemplateId>lt-1</launchTemplateId>
            <launchTemplateData>
                <instanceType>m5.large</instanceType>
                <tagSpecificationSet/>
                <userData><![CDATA[a<b]]></userData>
            </launchTemplateData>
            <versionDescription>x &amp; y &#x41;&#66;</versionDescription>
        </item>
    </launchTemplateVersionSet>
</DescribeLaunchTemplateVersionsResponse>"#;
        let root = parse(doc).unwrap();
        assert_eq!(root.name, "DescribeLaunchTemplateVersionsResponse");
        let item = root.path(&["launchTemplateVersionSet", "item"]).unwrap();
        assert_eq!(
            item.text_at(&["launchTemplateData", "instanceType"]),
            Some("m5.large")
        );
        assert_eq!(
            item.text_at(&["launchTemplateData", "userData"]),
            Some("a<b")
        );
        assert_eq!(item.text_at(&["versionDescription"]), Some("x & y AB"));
        assert_eq!(
            root.find("launchTemplateId").map(|e| e.text.as_str()),
            Some("lt-1")
        );
        assert_eq!(root.children_named("requestId").count(), 1);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for bad in [
            "",
            "<a>",
            "<a></b>",
            "text",
            "<a>&bogus;</a>",
            "<a/><b/>",
            "<a attr='>'",
            "</a>",
            "<a>&#xZZ;</a>",
            "<>",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse("<a x='1>2'><b/></a>").unwrap().children.len(), 1);
    }
}
