//! Transparent huge pages for large buffers that are about to be filled. Most systems give
//! them only on request (`madvise` mode): a fresh 100 MB buffer then takes 50 page faults
//! instead of 25,000, and on a virtual machine each fault is dear.

/// Buffers from this size get the advice; below it, a huge page would seldom fit.
const HUGE_PAGE_MIN: usize = 4 << 20;

/// Advises huge pages for the buffer at `start..end`, rounded out to whole pages. Advice on
/// only part of an allocation's mapping would split it in two, and `realloc` could then no
/// longer grow it with `mremap` (which cannot span mappings): it would copy it instead.
#[cfg(target_os = "linux")]
pub fn advise_huge_pages(start: usize, end: usize) {
    if end - start < HUGE_PAGE_MIN {
        return;
    }
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let first = start / page * page;
    let last = end.next_multiple_of(page);
    // SAFETY: advice only: MADV_HUGEPAGE never changes memory contents, also on the parts of
    // the first and last pages outside the buffer.
    unsafe { libc::madvise(first as *mut libc::c_void, last - first, libc::MADV_HUGEPAGE) };
}

#[cfg(not(target_os = "linux"))]
pub fn advise_huge_pages(_start: usize, _end: usize) {}

/// Advises huge pages for all of `v`'s allocation, once it is large enough.
pub fn advise_vec(v: &Vec<u8>) {
    let start = v.as_ptr() as usize;
    advise_huge_pages(start, start + v.capacity());
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The `VmFlags` of the mapping holding `addr`, from `/proc/self/smaps`.
    fn vm_flags(addr: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ')
                && let Some((lo, hi)) = range.split_once('-')
                && let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            {
                inside = (lo..hi).contains(&addr);
            } else if inside && let Some(flags) = line.strip_prefix("VmFlags:") {
                return flags.to_string();
            }
        }
        panic!("no mapping holds {addr:#x}");
    }

    #[test]
    fn large_buffers_get_the_advice_and_small_ones_do_not() {
        let large: Vec<u8> = Vec::with_capacity(16 << 20);
        advise_vec(&large);
        let flags = vm_flags(large.as_ptr() as usize + (8 << 20));
        assert!(flags.split_whitespace().any(|f| f == "hg"), "advised: {flags}");

        let small: Vec<u8> = Vec::with_capacity(HUGE_PAGE_MIN - 1);
        advise_vec(&small);
        let flags = vm_flags(small.as_ptr() as usize);
        assert!(!flags.split_whitespace().any(|f| f == "hg"), "not advised: {flags}");
    }
}
