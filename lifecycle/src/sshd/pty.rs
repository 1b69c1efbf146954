//! Pseudo-terminals for sessions that ask for one: a pair from `openpty`, its size
//! set and changed on the master.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A terminal's size in characters and pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Size {
    pub cols: u32,
    pub rows: u32,
    pub pix_width: u32,
    pub pix_height: u32,
}

fn winsize(s: Size) -> libc::winsize {
    let clamp = |v: u32| v.min(u32::from(u16::MAX)) as u16;
    libc::winsize {
        ws_row: clamp(s.rows),
        ws_col: clamp(s.cols),
        ws_xpixel: clamp(s.pix_width),
        ws_ypixel: clamp(s.pix_height),
    }
}

/// A new pty (master, slave), `size` set.
pub fn open(size: Size) -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (mut master, mut slave) = (-1, -1);
    let ws = winsize(size);
    // SAFETY: openpty writes two new descriptors into master and slave.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &ws,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both were just opened and are owned by nobody else.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    for fd in [&master, &slave] {
        // SAFETY: fcntl on an open descriptor.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok((master, slave))
}

/// Changes the terminal's size (the foreground process gets SIGWINCH).
pub fn resize(master: &impl AsRawFd, size: Size) -> std::io::Result<()> {
    let ws = winsize(size);
    // SAFETY: TIOCSWINSZ reads a winsize from the pointer.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The size the terminal has.
pub fn size(fd: &impl AsRawFd) -> std::io::Result<Size> {
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes a winsize to the pointer.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Size {
        cols: ws.ws_col.into(),
        rows: ws.ws_row.into(),
        pix_width: ws.ws_xpixel.into(),
        pix_height: ws.ws_ypixel.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pty_has_the_size_asked_and_changes_it() {
        let s = Size {
            cols: 100,
            rows: 30,
            ..Default::default()
        };
        let (master, slave) = open(s).unwrap();
        assert_eq!(size(&slave).unwrap(), s);
        let bigger = Size {
            cols: 200,
            rows: 50,
            pix_width: 1,
            pix_height: 2,
        };
        resize(&master, bigger).unwrap();
        assert_eq!(size(&slave).unwrap(), bigger);
    }
}
