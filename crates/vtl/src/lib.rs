//! A virtual IBM TS3200 tape library.
