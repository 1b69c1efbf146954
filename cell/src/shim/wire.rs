//! The exec helper's pipe protocol (internal to the cell): over the helper's stdin
//! and stdout, messages each preceded by their length (a big-endian u32). The first
//! message on stdin is the [`lattice_specs::exec::ExecRequest`] (JSON); every other
//! message either way is an encoded [`lattice_specs::exec::Frame`].

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest message either side accepts (a frame carries at most a read's worth
/// of output; a request is small).
pub const MAX_MESSAGE: usize = 1 << 20;

fn too_long(len: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("an exec helper message of {len} bytes (at most {MAX_MESSAGE})"),
    )
}

/// The bytes of one message: its length, then itself.
pub fn encode(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + msg.len());
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(msg);
    out
}

/// Writes one message.
pub async fn write_message<W: AsyncWrite + Unpin>(w: &mut W, msg: &[u8]) -> io::Result<()> {
    if msg.len() > MAX_MESSAGE {
        return Err(too_long(msg.len()));
    }
    w.write_all(&encode(msg)).await?;
    w.flush().await
}

/// Reads one message; `None` at the end of the stream (between messages).
pub async fn read_message<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_MESSAGE {
        return Err(too_long(len));
    }
    let mut msg = vec![0u8; len];
    r.read_exact(&mut msg).await?;
    Ok(Some(msg))
}

/// [`read_message`] from a blocking reader (unbuffered: nothing past the message is
/// consumed).
pub fn read_message_sync<R: io::Read>(r: &mut R) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_MESSAGE {
        return Err(too_long(len));
    }
    let mut msg = vec![0u8; len];
    r.read_exact(&mut msg)?;
    Ok(Some(msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_round_trip_and_end_cleanly() {
        let mut bytes = encode(b"hello");
        bytes.extend(encode(b""));
        let mut r = bytes.as_slice();
        assert_eq!(read_message(&mut r).await.unwrap().unwrap(), b"hello");
        assert_eq!(read_message(&mut r).await.unwrap().unwrap(), b"");
        assert_eq!(read_message(&mut r).await.unwrap(), None);
        let mut r = bytes.as_slice();
        assert_eq!(read_message_sync(&mut r).unwrap().unwrap(), b"hello");
    }

    #[tokio::test]
    async fn a_cut_or_oversized_message_is_an_error() {
        let bytes = encode(b"hello");
        let mut cut = &bytes[..6];
        assert!(read_message(&mut cut).await.is_err());
        let huge = ((MAX_MESSAGE + 1) as u32).to_be_bytes();
        let mut r = &huge[..];
        let e = read_message(&mut r).await.unwrap_err();
        assert!(e.to_string().contains("at most"), "{e}");
    }
}
