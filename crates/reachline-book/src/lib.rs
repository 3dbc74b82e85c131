//! The loan book's edge: its rows, every field as text ([`rows`]), and their parsing into domain
//! values with every field's error named ([`parse`]). Pure: the binary reads the files and the
//! server reads request bodies; both hand the rows here.

pub mod parse;
pub mod rows;
