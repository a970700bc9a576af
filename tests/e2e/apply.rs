//! `installer apply` on a real dockerd (issue 4). Filled in below.
