//! Receivers: what each kind of notification looks like and how its delivery is retried.
