//! Plain integer wall-clock arithmetic for the matchers: a cursor with carries, month lengths
//! and weekdays. Kept free of time zones on purpose.

use jiff::civil::DateTime;

/// Days in a month of the proleptic Gregorian calendar.
pub(crate) fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Day of the week, Sunday = 0.
pub(crate) fn weekday(y: i32, m: u32, d: u32) -> u32 {
    const T: [i32; 12] = [0, 3, 2, 5, 0, 3, 5, 1, 4, 6, 2, 4];
    let y = if m < 3 { y - 1 } else { y };
    let w =
        y + y.div_euclid(4) - y.div_euclid(100) + y.div_euclid(400) + T[m as usize - 1] + d as i32;
    w.rem_euclid(7) as u32
}

/// A wall-clock time to the second, ordered field by field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Wall {
    pub(crate) y: i32,
    pub(crate) mo: u32,
    pub(crate) d: u32,
    pub(crate) h: u32,
    pub(crate) mi: u32,
    pub(crate) s: u32,
}

impl Wall {
    /// `dt` rounded down to the second.
    pub(crate) fn floor(dt: DateTime) -> Wall {
        Wall {
            y: i32::from(dt.year()),
            mo: dt.month() as u32,
            d: dt.day() as u32,
            h: dt.hour() as u32,
            mi: dt.minute() as u32,
            s: dt.second() as u32,
        }
    }

    /// `dt` rounded up to the second; `None` past the last representable second.
    pub(crate) fn ceil(dt: DateTime) -> Option<Wall> {
        let mut w = Wall::floor(dt);
        if dt.subsec_nanosecond() > 0 {
            w.next_second();
            w.to_datetime()?;
        }
        Some(w)
    }

    /// The civil date-time, or `None` outside jiff's range (years -9999 to 9999).
    pub(crate) fn to_datetime(self) -> Option<DateTime> {
        let y = i16::try_from(self.y).ok()?;
        DateTime::new(
            y,
            self.mo as i8,
            self.d as i8,
            self.h as i8,
            self.mi as i8,
            self.s as i8,
            0,
        )
        .ok()
    }

    /// The first second of the next month.
    pub(crate) fn next_month(&mut self) {
        (self.d, self.h, self.mi, self.s) = (1, 0, 0, 0);
        if self.mo == 12 {
            (self.y, self.mo) = (self.y + 1, 1);
        } else {
            self.mo += 1;
        }
    }

    /// The first second of the next day.
    pub(crate) fn next_day(&mut self) {
        if self.d >= days_in_month(self.y, self.mo) {
            self.next_month();
        } else {
            (self.d, self.h, self.mi, self.s) = (self.d + 1, 0, 0, 0);
        }
    }

    /// The first second of the next hour.
    pub(crate) fn next_hour(&mut self) {
        if self.h == 23 {
            self.next_day();
        } else {
            (self.h, self.mi, self.s) = (self.h + 1, 0, 0);
        }
    }

    /// The first second of the next minute.
    pub(crate) fn next_minute(&mut self) {
        if self.mi == 59 {
            self.next_hour();
        } else {
            (self.mi, self.s) = (self.mi + 1, 0);
        }
    }

    /// The next second.
    pub(crate) fn next_second(&mut self) {
        if self.s == 59 {
            self.next_minute();
        } else {
            self.s += 1;
        }
    }
}
