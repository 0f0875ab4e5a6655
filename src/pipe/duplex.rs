//! [`DuplexPipe`]: one party's ends of two pipes.

use super::{Pipe, PipeReader, PipeWriter};

/// One party's view of a two-way connection made of two [`Pipe`]s: it reads `input` and
/// writes `output`. [`DuplexPipe::pair`] makes the two complementary ends, the transport's
/// and the application's, as System.IO.Pipelines' `DuplexPipe.CreateConnectionPair` does.
#[derive(Debug)]
pub struct DuplexPipe<'a, 'p> {
    /// What the other party wrote.
    pub input: PipeReader<'a, 'p>,
    /// What the other party will read.
    pub output: PipeWriter<'a, 'p>,
}

impl<'a, 'p> DuplexPipe<'a, 'p> {
    /// The transport's end and the application's end over two pipes, returned as
    /// `(transport, application)`:
    ///
    /// - `to_application` carries bytes from the transport to the application:
    ///   `transport.output` writes it, `application.input` reads it.
    /// - `to_transport` carries bytes from the application to the transport:
    ///   `application.output` writes it, `transport.input` reads it.
    ///
    /// ```
    /// use ringlet::pipe::{DuplexPipe, Pipe, PipeOptions};
    /// use ringlet::pool::{BufPool, BufPoolConfig, BufPoolStorage, RecvTier};
    ///
    /// let mut storage = BufPoolStorage::<8, 64>::new();
    /// let config = BufPoolConfig { recv_tier: RecvTier::FreeList, user_reserve: 8 };
    /// let pool = BufPool::new(&mut storage, config).unwrap();
    /// let mut up: Pipe<'_> = Pipe::new(pool, PipeOptions::default()).unwrap();
    /// let mut down: Pipe<'_> = Pipe::new(pool, PipeOptions::default()).unwrap();
    /// let (mut transport, mut application) = DuplexPipe::pair(&mut up, &mut down);
    ///
    /// // The transport received a request from the network...
    /// transport.output.write(&[0, 1, 2, 3]).unwrap();
    /// let _ = transport.output.try_flush().unwrap();
    /// // ...which the application reads, and answers.
    /// let request = application.input.try_read().unwrap().buffer();
    /// assert_eq!(request, [0, 1, 2, 3]);
    /// let end = request.end();
    /// application.input.advance_to(end).unwrap();
    /// application.output.write(b"ok").unwrap();
    /// let _ = application.output.try_flush().unwrap();
    /// assert_eq!(transport.input.try_read().unwrap().buffer(), *b"ok");
    /// ```
    pub fn pair<const A: usize, const B: usize>(
        to_application: &'a mut Pipe<'p, A>,
        to_transport: &'a mut Pipe<'p, B>,
    ) -> (DuplexPipe<'a, 'p>, DuplexPipe<'a, 'p>) {
        let (app_writer, app_reader) = to_application.split();
        let (transport_writer, transport_reader) = to_transport.split();
        (
            DuplexPipe {
                input: transport_reader,
                output: app_writer,
            },
            DuplexPipe {
                input: app_reader,
                output: transport_writer,
            },
        )
    }
}
