//! A framed connection over any async byte stream (TLS, plain TCP, or an
//! in-memory duplex in tests): whole messages in and out, every read and
//! write bounded by the idle timeout.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

use crate::proto::{self, DecodeError, EncodeError, Msg};

/// Why a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The socket or TLS layer failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// Nothing arrived (or could be sent) within the idle timeout.
    #[error("no data for {0:?} (idle timeout)")]
    Timeout(Duration),
    /// The peer sent bytes that are not a valid frame.
    #[error("invalid frame: {0}")]
    Decode(#[from] DecodeError),
    /// A message could not be encoded.
    #[error("{0}")]
    Encode(#[from] EncodeError),
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
}

/// Frames over a byte stream.
pub struct Conn<S> {
    stream: S,
    /// Received bytes; `rbuf[rpos..]` is not decoded yet. Consumed frames are
    /// skipped by moving `rpos`, and the buffer is compacted only when it must
    /// grow, so a burst of small pipelined frames costs no memmove per frame.
    rbuf: Vec<u8>,
    rpos: usize,
    wbuf: Vec<u8>,
    idle: Duration,
}

/// Read size: large enough for a full 1 MiB data frame in a few reads.
const READ_CHUNK: usize = 256 * 1024;

impl<S> Conn<S> {
    /// Wraps `stream`; every read and write must progress within `idle`.
    pub fn new(stream: S, idle: Duration) -> Self {
        Conn {
            stream,
            rbuf: Vec::with_capacity(64 * 1024),
            rpos: 0,
            wbuf: Vec::with_capacity(64 * 1024),
            idle,
        }
    }

    /// The underlying stream (e.g. to read TLS session details).
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// Unwraps the stream. Bytes read but not yet decoded would be lost, so
    /// this is only for a point where the peer must be waiting for us.
    pub fn into_inner(self) -> S {
        debug_assert!(self.rpos == self.rbuf.len(), "unwrapping a connection with unread input");
        self.stream
    }

    /// Changes the idle timeout (e.g. from the handshake bound to the session's).
    pub fn set_idle(&mut self, idle: Duration) {
        self.idle = idle;
    }

    /// The idle timeout.
    pub fn idle(&self) -> Duration {
        self.idle
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// Splits into a reading and a writing half (each a `Conn`), so replies can
    /// stream out while requests stream in. Bytes already buffered stay with
    /// the reading half.
    pub fn split(self) -> (Conn<ReadHalf<S>>, Conn<WriteHalf<S>>) {
        let (r, w) = tokio::io::split(self.stream);
        (
            Conn { stream: r, rbuf: self.rbuf, rpos: self.rpos, wbuf: Vec::new(), idle: self.idle },
            Conn { stream: w, rbuf: Vec::new(), rpos: 0, wbuf: self.wbuf, idle: self.idle },
        )
    }
}

impl<S: AsyncRead + Unpin> Conn<S> {
    /// The next message, or `None` when the peer closed cleanly between frames.
    ///
    /// # Errors
    /// On I/O failure, timeout, an invalid or oversized frame, or a close in
    /// the middle of a frame.
    pub async fn recv(&mut self) -> Result<Option<Msg>, ConnError> {
        loop {
            if let Some((msg, used)) = proto::decode(&self.rbuf[self.rpos..])? {
                self.rpos += used;
                return Ok(Some(msg));
            }
            if self.rpos > 0 {
                self.rbuf.drain(..self.rpos);
                self.rpos = 0;
            }
            self.rbuf.reserve(READ_CHUNK);
            let n = tokio::time::timeout(self.idle, self.stream.read_buf(&mut self.rbuf))
                .await
                .map_err(|_| ConnError::Timeout(self.idle))??;
            if n == 0 {
                return if self.rbuf.is_empty() { Ok(None) } else { Err(ConnError::Truncated) };
            }
        }
    }

    /// True when a whole frame is already buffered: the next [`Conn::recv`]
    /// will not wait. Servers use it to answer a pipelined burst in one write.
    ///
    /// Only the length prefix is read (decoding the frame here and again in
    /// `recv` copied every `Data` payload twice): a frame whose prefix is
    /// invalid counts as there, so that `recv` reports it.
    pub fn has_frame(&self) -> bool {
        let b = &self.rbuf[self.rpos..];
        let Some(len) = b.get(..4) else { return false };
        let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
        len == 0 || len > proto::MAX_FRAME || b.len() >= 4 + len
    }
}

impl<S: AsyncWrite + Unpin> Conn<S> {
    /// Queues a message; it goes out at the next [`Conn::flush`] (batching
    /// writes matters: one TLS record and one syscall for many small frames).
    ///
    /// # Errors
    /// When the message cannot be encoded.
    pub fn queue(&mut self, msg: &Msg) -> Result<(), ConnError> {
        proto::encode(msg, &mut self.wbuf)?;
        Ok(())
    }

    /// Writes everything queued.
    ///
    /// # Errors
    /// On I/O failure or timeout.
    pub async fn flush(&mut self) -> Result<(), ConnError> {
        let idle = self.idle;
        let fut = async {
            self.stream.write_all(&self.wbuf).await?;
            self.stream.flush().await
        };
        tokio::time::timeout(idle, fut).await.map_err(|_| ConnError::Timeout(idle))??;
        self.wbuf.clear();
        Ok(())
    }

    /// Queues and flushes one message.
    ///
    /// # Errors
    /// As [`Conn::queue`] and [`Conn::flush`].
    pub async fn send(&mut self, msg: &Msg) -> Result<(), ConnError> {
        self.queue(msg)?;
        self.flush().await
    }

    /// Sends one piece of streamed content without copying it into a message
    /// first: the frame header goes out with anything queued, then the bytes
    /// straight from the caller's buffer (file content is the bulk of traffic).
    ///
    /// # Errors
    /// When `bytes` exceeds [`proto::MAX_CHUNK`], on I/O failure or timeout.
    pub async fn send_data(&mut self, stream: u32, bytes: &[u8]) -> Result<(), ConnError> {
        if bytes.len() > proto::MAX_CHUNK {
            return Err(ConnError::Encode(EncodeError::FieldTooLong("data chunk")));
        }
        let len = (1 + 4 + 4 + bytes.len()) as u32;
        self.wbuf.extend_from_slice(&len.to_be_bytes());
        self.wbuf.push(Msg::Data { stream: 0, bytes: Vec::new() }.type_byte());
        self.wbuf.extend_from_slice(&stream.to_be_bytes());
        self.wbuf.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        let idle = self.idle;
        let fut = async {
            // One vectored write for the queue and the content: the frame
            // header does not cost a TLS record and a syscall of its own.
            let (mut head, mut body) = (0, 0);
            while head < self.wbuf.len() || body < bytes.len() {
                let bufs = [io::IoSlice::new(&self.wbuf[head..]), io::IoSlice::new(&bytes[body..])];
                let n = self.stream.write_vectored(&bufs).await?;
                if n == 0 {
                    return Err(io::Error::from(io::ErrorKind::WriteZero));
                }
                let h = n.min(self.wbuf.len() - head);
                head += h;
                body += n - h;
            }
            self.stream.flush().await
        };
        tokio::time::timeout(idle, fut).await.map_err(|_| ConnError::Timeout(idle))??;
        self.wbuf.clear();
        Ok(())
    }

    /// Queues one `Data` frame whose payload is read straight from `src` into
    /// the write buffer: at most `max` bytes (and at most
    /// [`proto::MAX_CHUNK`]), fewer only at end of file. A small file thus
    /// costs no buffer of its own and goes out in one write with the frames
    /// around it. Nothing is queued when nothing could be read.
    ///
    /// Returns the bytes queued and, if reading failed, why (what was read
    /// before the failure is queued).
    pub fn queue_data_from(
        &mut self,
        stream: u32,
        src: &mut impl io::Read,
        max: usize,
    ) -> (usize, Option<io::Error>) {
        const HEAD: usize = 4 + 1 + 4 + 4;
        let max = max.min(proto::MAX_CHUNK);
        let start = self.wbuf.len();
        // Zeroes only the bytes about to be read (the file's size at most).
        self.wbuf.resize(start + HEAD + max, 0);
        let (mut n, mut err) = (0, None);
        while n < max {
            match src.read(&mut self.wbuf[start + HEAD + n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        if n == 0 {
            self.wbuf.truncate(start);
            return (0, err);
        }
        self.wbuf.truncate(start + HEAD + n);
        let head = &mut self.wbuf[start..start + HEAD];
        head[..4].copy_from_slice(&((1 + 4 + 4 + n) as u32).to_be_bytes());
        head[4] = Msg::Data { stream: 0, bytes: Vec::new() }.type_byte();
        head[5..9].copy_from_slice(&stream.to_be_bytes());
        head[9..].copy_from_slice(&(n as u32).to_be_bytes());
        (n, err)
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.wbuf.len()
    }

    /// Writes raw bytes (tests that play a misbehaving peer).
    ///
    /// # Errors
    /// On I/O failure or timeout.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ConnError> {
        self.wbuf.extend_from_slice(bytes);
        self.flush().await
    }

    /// Shuts the write side down, bounded by the idle timeout.
    pub async fn shutdown(&mut self) {
        let _ = tokio::time::timeout(self.idle, self.stream.shutdown()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_cross_a_duplex_and_eof_is_clean() {
        let (a, b) = tokio::io::duplex(64);
        let mut a = Conn::new(a, Duration::from_secs(5));
        let mut b = Conn::new(b, Duration::from_secs(5));
        let t = tokio::spawn(async move {
            for id in 0..100 {
                a.queue(&Msg::Ping { id }).unwrap();
            }
            a.flush().await.unwrap();
            a.shutdown().await;
        });
        for id in 0..100 {
            assert_eq!(b.recv().await.unwrap(), Some(Msg::Ping { id }));
        }
        assert_eq!(b.recv().await.unwrap(), None);
        t.await.unwrap();
    }

    #[tokio::test]
    async fn send_data_frames_decode_as_data() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut a = Conn::new(a, Duration::from_secs(5));
        let mut b = Conn::new(b, Duration::from_secs(5));
        let t = tokio::spawn(async move {
            a.queue(&Msg::Ping { id: 1 }).unwrap();
            a.send_data(9, b"content").await.unwrap();
            a.send_data(9, &[]).await.unwrap();
        });
        assert_eq!(b.recv().await.unwrap(), Some(Msg::Ping { id: 1 }));
        assert_eq!(
            b.recv().await.unwrap(),
            Some(Msg::Data { stream: 9, bytes: b"content".to_vec() })
        );
        assert_eq!(b.recv().await.unwrap(), Some(Msg::Data { stream: 9, bytes: vec![] }));
        t.await.unwrap();
    }

    #[tokio::test]
    async fn data_read_into_the_queue_decodes_as_data_and_stops_at_max_or_eof() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut a = Conn::new(a, Duration::from_secs(5));
        let mut b = Conn::new(b, Duration::from_secs(5));
        a.queue(&Msg::Ping { id: 1 }).unwrap();
        let (n, e) = a.queue_data_from(3, &mut &b"0123456789"[..], 4);
        assert!((n, e.is_none()) == (4, true));
        let (n, e) = a.queue_data_from(4, &mut &b"abc"[..], 100);
        assert!((n, e.is_none()) == (3, true));
        let before = a.queued();
        let (n, e) = a.queue_data_from(5, &mut &b""[..], 100);
        assert!((n, e.is_none(), a.queued()) == (0, true, before), "nothing read, nothing queued");
        a.queue(&Msg::Ping { id: 2 }).unwrap();
        a.flush().await.unwrap();
        assert_eq!(b.recv().await.unwrap(), Some(Msg::Ping { id: 1 }));
        assert_eq!(b.recv().await.unwrap(), Some(Msg::Data { stream: 3, bytes: b"0123".to_vec() }));
        assert_eq!(b.recv().await.unwrap(), Some(Msg::Data { stream: 4, bytes: b"abc".to_vec() }));
        assert_eq!(b.recv().await.unwrap(), Some(Msg::Ping { id: 2 }));
    }

    #[tokio::test]
    async fn has_frame_tells_a_whole_or_invalid_frame_from_a_partial_one() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut a = Conn::new(a, Duration::from_secs(5));
        let mut b = Conn::new(b, Duration::from_secs(5));
        let mut ping = Vec::new();
        proto::encode(&Msg::Ping { id: 1 }, &mut ping).unwrap();
        assert!(!b.has_frame());
        // A frame and part of the next.
        a.send_raw(&[&ping[..], &ping[..3]].concat()).await.unwrap();
        assert_eq!(b.recv().await.unwrap(), Some(Msg::Ping { id: 1 }));
        assert!(!b.has_frame(), "three bytes of a prefix");
        a.send_raw(&ping[3..ping.len() - 1]).await.unwrap();
        while b.rbuf.len() - b.rpos < ping.len() - 1 {
            b.rbuf.reserve(64);
            b.stream.read_buf(&mut b.rbuf).await.unwrap();
        }
        assert!(!b.has_frame(), "all but the last byte");
        a.send_raw(&ping[ping.len() - 1..]).await.unwrap();
        assert_eq!(b.recv().await.unwrap(), Some(Msg::Ping { id: 1 }));
        // An empty or oversized frame: there, so that recv reports it.
        a.send_raw(&0u32.to_be_bytes()).await.unwrap();
        while b.rbuf.len() - b.rpos < 4 {
            b.rbuf.reserve(64);
            b.stream.read_buf(&mut b.rbuf).await.unwrap();
        }
        assert!(b.has_frame());
        assert!(b.recv().await.is_err());
    }

    #[tokio::test]
    async fn silence_times_out() {
        let (_a, b) = tokio::io::duplex(64);
        let mut b = Conn::new(b, Duration::from_millis(50));
        assert!(matches!(b.recv().await, Err(ConnError::Timeout(_))));
    }

    #[tokio::test]
    async fn close_mid_frame_is_truncation() {
        let (a, b) = tokio::io::duplex(64);
        let mut a = Conn::new(a, Duration::from_secs(5));
        let mut b = Conn::new(b, Duration::from_secs(5));
        a.send_raw(&[0, 0, 0, 9, 4]).await.unwrap();
        a.shutdown().await;
        drop(a);
        assert!(matches!(b.recv().await, Err(ConnError::Truncated)));
    }
}
