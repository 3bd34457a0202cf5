//! Wire types shared by the controller, the node agent and the CNI plugin.
//!
//! Not built yet (tracked by the node agent issue).
