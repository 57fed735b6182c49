//! The part of PostgreSQL's `pgoutput` logical replication protocol (version 1, text tuples)
//! the commit-log feed reads: relation descriptions, and the id and version of each inserted,
//! updated or deleted row of `data_items`; truncates. Transaction boundaries and logical
//! decoding messages arrive already parsed (by `pgwire-replication`). The message formats:
//! <https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html>.

use std::collections::HashMap;

use crate::cache::items::Change;

/// What one pgoutput message means for the cache.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A row of `data_items` changed.
    Changed { id: i64, change: Change },
    /// `data_items` was truncated.
    Truncated,
    /// Nothing the cache needs (another relation, a type, an origin, a described relation).
    Nothing,
}

/// Where `id` and `version` sit in each relation's tuples, from its `Relation` message.
#[derive(Debug, Default)]
pub struct Relations {
    /// Relation id → (whether it is `data_items`, id column, version column).
    known: HashMap<u32, Columns>,
}

#[derive(Debug, Clone, Copy)]
struct Columns {
    items: bool,
    id: usize,
    version: usize,
}

/// A message that is not what the protocol says (never expected from a server).
#[derive(Debug, PartialEq)]
pub struct Malformed(pub &'static str);

impl Relations {
    /// Reads one pgoutput message (`data` of an XLogData).
    pub fn read(&mut self, data: &[u8]) -> Result<Event, Malformed> {
        let mut r = Reader(data);
        match r.u8()? {
            b'R' => {
                self.describe(&mut r)?;
                Ok(Event::Nothing)
            }
            b'I' => {
                let columns = self.columns(r.u32()?)?;
                r.expect(b'N')?;
                changed(columns, &r.tuple()?, false)
            }
            b'U' => {
                let columns = self.columns(r.u32()?)?;
                let mut kind = r.u8()?;
                if matches!(kind, b'K' | b'O') {
                    r.tuple()?;
                    kind = r.u8()?;
                }
                if kind != b'N' {
                    return Err(Malformed("update without a new tuple"));
                }
                changed(columns, &r.tuple()?, false)
            }
            b'D' => {
                let columns = self.columns(r.u32()?)?;
                if !matches!(r.u8()?, b'K' | b'O') {
                    return Err(Malformed("delete without a key"));
                }
                changed(columns, &r.tuple()?, true)
            }
            b'T' => {
                let n = r.u32()?;
                r.u8()?;
                let mut items = false;
                for _ in 0..n {
                    let relid = r.u32()?;
                    items |= self.known.get(&relid).is_some_and(|c| c.items);
                }
                Ok(if items {
                    Event::Truncated
                } else {
                    Event::Nothing
                })
            }
            // Type, origin, and anything a newer server adds that changes no row.
            _ => Ok(Event::Nothing),
        }
    }

    fn describe(&mut self, r: &mut Reader<'_>) -> Result<(), Malformed> {
        let relid = r.u32()?;
        let _namespace = r.string()?;
        let name = r.string()?;
        let _identity = r.u8()?;
        let n = r.u16()?;
        let (mut id, mut version) = (None, None);
        for at in 0..usize::from(n) {
            let _flags = r.u8()?;
            match r.string()? {
                "id" => id = Some(at),
                "version" => version = Some(at),
                _ => {}
            }
            let _type = r.u32()?;
            let _modifier = r.u32()?;
        }
        let items = name == "data_items";
        let columns = match (id, version) {
            (Some(id), Some(version)) => Columns { items, id, version },
            _ if items => return Err(Malformed("data_items without id or version")),
            _ => Columns {
                items,
                id: 0,
                version: 0,
            },
        };
        self.known.insert(relid, columns);
        Ok(())
    }

    fn columns(&self, relid: u32) -> Result<Columns, Malformed> {
        self.known
            .get(&relid)
            .copied()
            .ok_or(Malformed("a change to a relation never described"))
    }
}

/// The change a tuple of `columns` describes: a delete needs only the id (a key tuple holds
/// nothing else), a write the version too.
fn changed(columns: Columns, tuple: &[Option<&str>], deleted: bool) -> Result<Event, Malformed> {
    if !columns.items {
        return Ok(Event::Nothing);
    }
    let number = |at: usize| {
        tuple
            .get(at)
            .copied()
            .flatten()
            .and_then(|t| t.parse::<i64>().ok())
    };
    let id = number(columns.id).ok_or(Malformed("a row without its id"))?;
    let change = if deleted {
        Change::Deleted
    } else {
        Change::Written(number(columns.version).ok_or(Malformed("a row without its version"))?)
    };
    Ok(Event::Changed { id, change })
}

/// A cursor over one message.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.0.len() < n {
            return Err(Malformed("truncated message"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, Malformed> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, Malformed> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn expect(&mut self, tag: u8) -> Result<(), Malformed> {
        if self.u8()? == tag {
            Ok(())
        } else {
            Err(Malformed("unexpected tag"))
        }
    }

    /// A NUL-terminated string.
    fn string(&mut self) -> Result<&'a str, Malformed> {
        let end = self
            .0
            .iter()
            .position(|b| *b == 0)
            .ok_or(Malformed("unterminated string"))?;
        let text = std::str::from_utf8(&self.0[..end]).map_err(|_| Malformed("not UTF-8"))?;
        self.0 = &self.0[end + 1..];
        Ok(text)
    }

    /// TupleData: each column null, unchanged (a TOASTed value not sent), or text.
    fn tuple(&mut self) -> Result<Vec<Option<&'a str>>, Malformed> {
        let n = self.u16()?;
        let mut values = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            values.push(match self.u8()? {
                b'n' | b'u' => None,
                b't' | b'b' => {
                    let len = self.u32()? as usize;
                    std::str::from_utf8(self.take(len)?).ok()
                }
                _ => return Err(Malformed("unknown column kind")),
            });
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relation(relid: u32, name: &str, columns: &[&str]) -> Vec<u8> {
        let mut m = vec![b'R'];
        m.extend(relid.to_be_bytes());
        m.extend(b"public\0");
        m.extend(name.as_bytes());
        m.push(0);
        m.push(b'd');
        m.extend((columns.len() as u16).to_be_bytes());
        for c in columns {
            m.push(1);
            m.extend(c.as_bytes());
            m.push(0);
            m.extend(20u32.to_be_bytes());
            m.extend(u32::MAX.to_be_bytes());
        }
        m
    }

    fn tuple(values: &[Option<&str>]) -> Vec<u8> {
        let mut m = (values.len() as u16).to_be_bytes().to_vec();
        for v in values {
            match v {
                Some(text) => {
                    m.push(b't');
                    m.extend((text.len() as u32).to_be_bytes());
                    m.extend(text.as_bytes());
                }
                None => m.push(b'n'),
            }
        }
        m
    }

    fn message(tag: u8, relid: u32, parts: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend(relid.to_be_bytes());
        for (kind, t) in parts {
            m.push(*kind);
            m.extend(t);
        }
        m
    }

    const COLUMNS: [&str; 4] = ["id", "name", "version", "updated_at"];

    #[test]
    fn reads_the_id_and_version_of_each_change() {
        let mut r = Relations::default();
        assert_eq!(
            r.read(&relation(7, "data_items", &COLUMNS)),
            Ok(Event::Nothing)
        );
        let row = tuple(&[Some("42"), Some("x"), Some("3"), Some("2026-12-04")]);
        assert_eq!(
            r.read(&message(b'I', 7, &[(b'N', row.clone())])),
            Ok(Event::Changed {
                id: 42,
                change: Change::Written(3)
            })
        );
        let key = tuple(&[Some("42"), None, None, None]);
        assert_eq!(
            r.read(&message(b'U', 7, &[(b'K', key.clone()), (b'N', row)])),
            Ok(Event::Changed {
                id: 42,
                change: Change::Written(3)
            })
        );
        assert_eq!(
            r.read(&message(b'D', 7, &[(b'K', key)])),
            Ok(Event::Changed {
                id: 42,
                change: Change::Deleted
            })
        );
        let mut truncate = vec![b'T'];
        truncate.extend(1u32.to_be_bytes());
        truncate.push(0);
        truncate.extend(7u32.to_be_bytes());
        assert_eq!(r.read(&truncate), Ok(Event::Truncated));
    }

    #[test]
    fn other_relations_and_messages_change_nothing_and_bad_ones_are_refused() {
        let mut r = Relations::default();
        r.read(&relation(9, "idempotency_keys", &["key", "body"]))
            .expect("described");
        let row = tuple(&[Some("k"), Some("b")]);
        assert_eq!(
            r.read(&message(b'I', 9, &[(b'N', row)])),
            Ok(Event::Nothing)
        );
        assert_eq!(r.read(b"Yanything"), Ok(Event::Nothing));
        let row = tuple(&[Some("1"), Some("x"), Some("1"), None]);
        assert!(
            r.read(&message(b'I', 8, &[(b'N', row)])).is_err(),
            "undescribed"
        );
        assert!(r.read(&relation(7, "data_items", &["id", "name"])).is_err());
        r.read(&relation(7, "data_items", &COLUMNS))
            .expect("described");
        assert!(r.read(&[b'I', 0, 0, 0, 7, b'N', 0]).is_err(), "truncated");
        let row = tuple(&[Some("x"), Some("x"), Some("1"), None]);
        assert!(r.read(&message(b'I', 7, &[(b'N', row)])).is_err(), "bad id");
    }
}
