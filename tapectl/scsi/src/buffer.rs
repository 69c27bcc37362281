//! A page-aligned byte buffer. SG_IO can move data straight between the device and user memory only
//! when the buffer is aligned; the SG transport bounces unaligned buffers through one of these.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

const ALIGN: usize = 4096;

pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    capacity: usize,
}

// SAFETY: the buffer owns its allocation exclusively, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes (at least one page is allocated).
    pub fn new(len: usize) -> Self {
        let capacity = len.max(1).next_multiple_of(ALIGN);
        let layout = Layout::from_size_align(capacity, ALIGN).expect("buffer size overflows");
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Self { ptr, len, capacity }
    }

    /// Grows (never shrinks the allocation) to `len` bytes; new bytes are zero.
    pub fn resize(&mut self, len: usize) {
        if len > self.capacity {
            *self = Self::new(len);
        } else {
            self.len = len;
        }
    }

    pub fn is_aligned(b: &[u8]) -> bool {
        (b.as_ptr() as usize).is_multiple_of(ALIGN)
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let layout =
            Layout::from_size_align(self.capacity, ALIGN).expect("layout was valid at allocation");
        // SAFETY: allocated in `new` with this exact layout.
        unsafe { dealloc(self.ptr.as_ptr(), layout) }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr is valid for `capacity >= len` initialised bytes.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and we hold &mut self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_resizable() {
        let mut b = AlignedBuf::new(10);
        assert!(AlignedBuf::is_aligned(&b));
        assert_eq!(b.len(), 10);
        b[9] = 7;
        b.resize(3 * ALIGN + 1);
        assert!(AlignedBuf::is_aligned(&b));
        assert!(b.iter().all(|&x| x == 0));
        b.resize(0);
        assert!(b.is_empty());
    }
}
