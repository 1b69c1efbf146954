//! The brain: the auctioneer (where work goes) and the converger (keeping
//! actual state equal to desired). Their decisions are pure functions here;
//! the I/O around them talks to the BBS and the cells.

pub mod auction;
pub mod converger;
