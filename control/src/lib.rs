//! xdpcopy control plane: the header-return channel, statistics, histograms (issue 3/4).
#![deny(unsafe_code)]
