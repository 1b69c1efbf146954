//! The bodies the router answers with.
//!
//! Most answers are whole bytes: an instance's body that arrived with its head,
//! or the router's own messages. Those go out without a box per response; only
//! what streams (a body read from the instance as the client takes it, an
//! upgrade's reply) is boxed.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body: whole bytes (none once sent) or a stream.
pub enum Body {
    Whole(Option<Bytes>),
    Stream(BoxBody<Bytes, BoxError>),
}

impl Body {
    pub fn empty() -> Body {
        Body::Whole(None)
    }

    pub fn whole(bytes: Bytes) -> Body {
        Body::Whole((!bytes.is_empty()).then_some(bytes))
    }

    pub fn stream<B>(body: B) -> Body
    where
        B: hyper::body::Body<Data = Bytes, Error = BoxError> + Send + Sync + 'static,
    {
        Body::Stream(body.boxed())
    }
}

impl Default for Body {
    fn default() -> Body {
        Body::empty()
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Body::Whole(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream(s) => Pin::new(s).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Whole(bytes) => bytes.is_none(),
            Body::Stream(s) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Whole(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Body::Stream(s) => s.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn whole_bytes_come_out_once_with_their_exact_length() {
        let b = Body::whole(Bytes::from_static(b"hello"));
        assert_eq!(hyper::body::Body::size_hint(&b).exact(), Some(5));
        assert!(!hyper::body::Body::is_end_stream(&b));
        assert_eq!(b.collect().await.unwrap().to_bytes(), "hello");
        let e = Body::whole(Bytes::new());
        assert!(hyper::body::Body::is_end_stream(&e));
        assert_eq!(hyper::body::Body::size_hint(&e).exact(), Some(0));
    }

    #[tokio::test]
    async fn a_stream_passes_through() {
        let s = http_body_util::Full::new(Bytes::from_static(b"abc")).map_err(|e| match e {});
        let b = Body::stream(s);
        assert_eq!(hyper::body::Body::size_hint(&b).exact(), Some(3));
        assert_eq!(b.collect().await.unwrap().to_bytes(), "abc");
    }
}
