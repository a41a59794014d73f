//! The protocol client against scripted replies.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;

/// A client connection and the server's end of it.
struct Fake {
    conn: Conn<DuplexStream>,
    server: DuplexStream,
}

impl Fake {
    fn new() -> Fake {
        let (client, server) = tokio::io::duplex(1 << 20);
        Fake {
            conn: Conn::new(client),
            server,
        }
    }

    /// Queues the server's reply to the next request.
    async fn reply(&mut self, bytes: &[u8]) {
        self.server.write_all(bytes).await.unwrap();
    }

    /// What the client has sent since the last call.
    async fn sent(&mut self) -> String {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(20), self.server.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(out).unwrap()
    }
}

#[tokio::test]
async fn version() {
    let mut f = Fake::new();
    f.reply(b"VERSION 1.6.18\r\n").await;
    assert_eq!(f.conn.version().await.unwrap(), "1.6.18");
    assert_eq!(f.sent().await, "version\r\n");
}

#[tokio::test]
async fn add() {
    let mut f = Fake::new();
    f.reply(b"STORED\r\nNOT_STORED\r\nEXISTS\r\n").await;
    assert!(f.conn.add("k", 7, 30, b"v a\r\nl").await.unwrap());
    assert!(!f.conn.add("k", 0, 1, b"").await.unwrap());
    assert!(matches!(
        f.conn.add("k", 0, 1, b"").await,
        Err(ProtoError::Unexpected(_))
    ));
    assert_eq!(
        f.sent().await,
        "add k 7 30 6\r\nv a\r\nl\r\nadd k 0 1 0\r\n\r\nadd k 0 1 0\r\n\r\n"
    );
}

#[tokio::test]
async fn cas_outcomes() {
    let mut f = Fake::new();
    f.reply(b"STORED\r\nEXISTS\r\nNOT_FOUND\r\nNOT_STORED\r\n")
        .await;
    assert_eq!(f.conn.cas("k", 0, 5, b"v", 42).await.unwrap(), Cas::Stored);
    assert_eq!(f.conn.cas("k", 0, 5, b"v", 42).await.unwrap(), Cas::Exists);
    assert_eq!(
        f.conn.cas("k", 0, 5, b"v", 42).await.unwrap(),
        Cas::NotFound
    );
    assert!(matches!(
        f.conn.cas("k", 0, 5, b"v", 42).await,
        Err(ProtoError::Unexpected(_))
    ));
    assert!(f.sent().await.starts_with("cas k 0 5 1 42\r\nv\r\n"));
}

#[tokio::test]
async fn gets_found_and_missing() {
    let mut f = Fake::new();
    f.reply(b"VALUE k 3 5 99\r\nhe\r\no\r\nEND\r\nEND\r\n")
        .await;
    let item = f.conn.gets("k").await.unwrap().unwrap();
    assert_eq!(
        item,
        Item {
            flags: 3,
            cas: 99,
            data: b"he\r\no".to_vec(),
            len: 5
        }
    );
    assert_eq!(f.conn.gets("k").await.unwrap(), None);
    assert_eq!(f.sent().await, "gets k\r\ngets k\r\n");
}

#[tokio::test]
async fn a_huge_value_is_cut_and_the_connection_stays_in_step() {
    let mut f = Fake::new();
    let len = MAX_VALUE + 1000;
    let mut reply = format!("VALUE k 0 {len} 1\r\n").into_bytes();
    reply.extend(std::iter::repeat(b'x').take(len));
    reply.extend_from_slice(b"\r\nEND\r\nVERSION 1\r\n");
    f.reply(&reply).await;
    let item = f.conn.gets("k").await.unwrap().unwrap();
    assert_eq!((item.data.len(), item.len), (MAX_VALUE, len));
    assert_eq!(f.conn.version().await.unwrap(), "1");
}

#[tokio::test]
async fn gets_rejects_malformed_replies() {
    for reply in [
        &b"VALUE other 0 1 1\r\nx\r\nEND\r\n"[..],
        b"VALUE k 0 1\r\nx\r\nEND\r\n",
        b"VALUE k x 1 1\r\nx\r\nEND\r\n",
        b"VALUE k 0 1 1\r\nxyz\r\nEND\r\n",
        b"VALUE k 0 1 1\r\nx\r\nNOPE\r\n",
        b"HELLO\r\n",
    ] {
        let mut f = Fake::new();
        f.reply(reply).await;
        let got = f.conn.gets("k").await;
        assert!(
            matches!(&got, Err(ProtoError::Unexpected(_) | ProtoError::Io(_))),
            "{:?}: {got:?}",
            String::from_utf8_lossy(reply)
        );
    }
}

#[tokio::test]
async fn incr() {
    let mut f = Fake::new();
    f.reply(b"5\r\nNOT_FOUND\r\n18446744073709551615 \r\nSTORED\r\n")
        .await;
    assert_eq!(f.conn.incr("c", 1).await.unwrap(), Some(5));
    assert_eq!(f.conn.incr("c", 1).await.unwrap(), None);
    assert_eq!(f.conn.incr("c", 1).await.unwrap(), Some(u64::MAX));
    assert!(matches!(
        f.conn.incr("c", 1).await,
        Err(ProtoError::Unexpected(_))
    ));
    assert_eq!(f.sent().await, "incr c 1\r\n".repeat(4));
}

#[tokio::test]
async fn error_replies() {
    let mut f = Fake::new();
    f.reply(b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n")
        .await;
    let e = f.conn.incr("c", 1).await.unwrap_err();
    assert!(matches!(&e, ProtoError::Client(m) if m.contains("non-numeric")));
    f.reply(b"SERVER_ERROR out of memory storing object\r\n")
        .await;
    let e = f.conn.add("k", 0, 1, b"v").await.unwrap_err();
    assert!(matches!(&e, ProtoError::Server(m) if m.contains("out of memory")));
    f.reply(b"ERROR\r\n").await;
    let e = f.conn.cas("k", 0, 1, b"v", 1).await.unwrap_err();
    assert!(matches!(e, ProtoError::UnknownCommand("cas")));
    assert_eq!(e.to_string(), "the server does not know 'cas'");
}

#[tokio::test]
async fn closed_and_garbled_connections() {
    let mut f = Fake::new();
    drop(std::mem::replace(&mut f.server, tokio::io::duplex(1).0));
    assert!(matches!(f.conn.version().await, Err(ProtoError::Io(_))));

    let mut f = Fake::new();
    f.reply(&vec![b'x'; 5000]).await;
    let e = f.conn.version().await.unwrap_err();
    assert!(matches!(e, ProtoError::Unexpected(_)), "{e:?}");

    let mut f = Fake::new();
    f.reply(b"\xff\xfe\r\n").await;
    assert!(matches!(
        f.conn.version().await,
        Err(ProtoError::Unexpected(_))
    ));
}

#[tokio::test]
async fn bad_keys_are_never_sent() {
    let mut f = Fake::new();
    for key in ["", "a b", "a\r\nflush_all", "é", &"k".repeat(251)] {
        assert!(matches!(f.conn.gets(key).await, Err(ProtoError::BadKey(_))));
        assert!(matches!(
            f.conn.add(key, 0, 1, b"v").await,
            Err(ProtoError::BadKey(_))
        ));
    }
    assert_eq!(f.sent().await, "");
    f.reply(b"END\r\n").await;
    assert_eq!(f.conn.gets(&"k".repeat(250)).await.unwrap(), None);
}
