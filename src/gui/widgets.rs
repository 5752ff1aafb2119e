//! Small drawing helpers shared by the views.
